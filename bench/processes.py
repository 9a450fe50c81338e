"""The processes a benchmark runs: the fake backend and a chatkeep server in front of it.

Both are real subprocesses started the way a user starts them (``chatkeep fake-llm`` and
``chatkeep serve``), each with its output in a log file. The fake backend binds port 0 and
announces its URL; chatkeep is given a free port and is ready once ``/healthz`` answers.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

#: How long a process may take to become ready.
STARTUP_TIMEOUT = 30.0
#: How long a process may take to stop after SIGTERM before it is killed.
STOP_TIMEOUT = 15.0

_ANNOUNCE = re.compile(r"fake-llm listening on (\S+)")


def chatkeep_command() -> list[str]:
    """The ``chatkeep`` console script of this interpreter's environment."""
    script = Path(sys.executable).with_name("chatkeep")
    if script.exists():
        return [str(script)]
    found = shutil.which("chatkeep")
    return [found] if found else [sys.executable, "-m", "chatkeep"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Server:
    """A running server process and where it answers."""

    name: str
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def rss(self) -> int:
        """Resident memory of the process, in bytes."""
        return int(psutil.Process(self.pid).memory_info().rss)

    def uss(self) -> int | None:
        """Memory only this process holds, when the platform tells."""
        try:
            return int(psutil.Process(self.pid).memory_full_info().uss)
        except (psutil.AccessDenied, AttributeError):
            return None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not stop in time. Safe twice."""
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(STOP_TIMEOUT)


def _spawn(args: list[str], log_path: Path, env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        return subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=dict(env)
        )


def _fail(name: str, process: subprocess.Popen[bytes], log_path: Path, why: str) -> RuntimeError:
    if process.poll() is None:
        process.kill()
        process.wait(STOP_TIMEOUT)
    tail = log_path.read_text(errors="replace")[-2000:]
    return RuntimeError(f"{name} {why}; its log ends with:\n{tail}")


def start_fake_llm(log_dir: Path, *, tokens: int = 16) -> Server:
    """``chatkeep fake-llm --port 0 --tokens N``; returns once it has announced its URL."""
    log_path = log_dir / "fake-llm.log"
    args = [*chatkeep_command(), "fake-llm", "--port", "0", "--tokens", str(tokens)]
    process = _spawn(args, log_path, os.environ)
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        match = _ANNOUNCE.search(log_path.read_text(errors="replace"))
        if match:
            return Server("fake-llm", process, match.group(1), log_path)
        if process.poll() is not None:
            raise _fail("fake-llm", process, log_path, f"exited with {process.returncode}")
        time.sleep(0.05)
    raise _fail("fake-llm", process, log_path, "did not announce its URL in time")


def chatkeep_env(backend_url: str, data_dir: Path) -> dict[str, str]:
    """The environment of a benchmarked chatkeep: SQLite with ``synchronous=FULL``.

    Two models reach the fake backend (its OpenAI and its Ollama wire format); ``echo`` is
    the built-in model that needs no network.
    """
    models = {
        "fake": {"provider": "openai", "url": backend_url, "upstream_model": "fake"},
        "fake-ollama": {"provider": "ollama", "url": backend_url, "upstream_model": "fake"},
        "echo": {"provider": "echo"},
    }
    env = {key: value for key, value in os.environ.items() if not key.startswith("CHATKEEP_")}
    env.update(
        {
            "CHATKEEP_DATA_DIR": str(data_dir),
            "CHATKEEP_STORAGE": "sqlite",
            "CHATKEEP_SQLITE_SYNCHRONOUS": "FULL",
            "CHATKEEP_MODELS": json.dumps(models),
            "CHATKEEP_DEFAULT_MODEL": "fake",
            "CHATKEEP_LOG_LEVEL": "WARNING",
        }
    )
    return env


def start_chatkeep(
    log_dir: Path,
    backend_url: str,
    data_dir: Path,
    *,
    label: str,
    settings: Mapping[str, str] | None = None,
) -> Server:
    """``chatkeep serve --port P`` in front of ``backend_url``; returns once it is ready.

    ``settings`` are more ``CHATKEEP_*`` variables, e.g. ``{"CHATKEEP_WORKING_SET_BYTES": "8MiB"}``.
    """
    port = free_port()
    log_path = log_dir / f"chatkeep-{label}.log"
    args = [*chatkeep_command(), "serve", "--port", str(port)]
    env = chatkeep_env(backend_url, data_dir)
    env.update(settings or {})
    process = _spawn(args, log_path, env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise _fail("chatkeep", process, log_path, f"exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=1.0) as response:
                if response.status == 200:
                    return Server("chatkeep", process, url, log_path)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.05)
    raise _fail("chatkeep", process, log_path, "was not ready in time")


def start_fake_llm_with(
    log_dir: Path, flags: Sequence[str] = (), *, name: str = "fake-llm", port: int = 0
) -> Server:
    """``chatkeep fake-llm --port PORT`` with more ``flags``, logged to ``<name>.log``.

    ``port`` 0 picks a free one; a fixed port lets a killed backend come back where its
    clients expect it. Returns once it has announced its URL.
    """
    log_path = log_dir / f"{name}.log"
    args = [*chatkeep_command(), "fake-llm", "--port", str(port), *flags]
    process = _spawn(args, log_path, os.environ)
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        match = _ANNOUNCE.search(log_path.read_text(errors="replace"))
        if match:
            return Server(name, process, match.group(1), log_path)
        if process.poll() is not None:
            raise _fail(name, process, log_path, f"exited with {process.returncode}")
        time.sleep(0.02)
    raise _fail(name, process, log_path, "did not announce its URL in time")
