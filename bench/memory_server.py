"""Real ``chatkeep serve`` processes and their memory, for `memory.py` and `leak.py`.

Every server binds 127.0.0.1 on a free port, keeps its data in a directory the caller
owns, and writes its log next to it. Memory is read from outside the server with psutil,
so measuring costs the server nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

MIB = 1024 * 1024
RESULTS_DIR = Path(__file__).resolve().parent / "results"
LOG_DIR = RESULTS_DIR / "logs"


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def mib(value: float | None) -> float | None:
    """Bytes as MiB, rounded to 0.1 (``None`` stays ``None``)."""
    return None if value is None else round(value / MIB, 1)


def raise_fd_limit(wanted: int) -> int:
    """Raise this process's open-file limit towards ``wanted``; return the new soft limit.

    Child processes inherit it, so call this before starting a server that must hold
    many connections.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


class Server:
    """One ``python -m chatkeep serve`` child process on a free loopback port.

    ``command`` replaces ``-m chatkeep`` before ``serve --port N`` (`leak.py` runs the
    leaking wrapper of ``tests/e2e/leaky_server.py`` this way).
    """

    def __init__(
        self,
        data_dir: Path,
        env: dict[str, str] | None = None,
        command: Sequence[str] = ("-m", "chatkeep"),
    ) -> None:
        self.data_dir = data_dir
        self.command = tuple(command)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # Logs outlive the temporary data directory, for a look after a failed run.
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.log_path = LOG_DIR / f"{data_dir.name}-{self.port}.log"
        self._env = {
            **os.environ,
            "CHATKEEP_DATA_DIR": str(data_dir),
            "CHATKEEP_LOG_LEVEL": "WARNING",
            **(env or {}),
        }
        self._process: subprocess.Popen[bytes] | None = None
        self._ps: psutil.Process | None = None

    def start(self, timeout: float = 60.0) -> None:
        """Start the process and wait until ``/healthz`` answers."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, *self.command, "serve", "--port", str(self.port)],
                env=self._env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._ps = psutil.Process(self._process.pid)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_tail()}")
            if self._healthy():
                return
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"server did not become healthy: {self.log_tail()}")

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM, wait, and SIGKILL if it does not stop in time; return the exit code."""
        if self._process is None:
            return None
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=10)
        return self._process.returncode

    def ensure_alive(self) -> None:
        """Raise `RuntimeError`, with the end of its log, when the server has exited."""
        if self._process is not None and self._process.poll() is not None:
            raise RuntimeError(f"server exited with {self._process.returncode}: {self.log_tail()}")

    @property
    def pid(self) -> int:
        """The server's process id."""
        assert self._process is not None, "server not started"
        return self._process.pid

    def rss(self) -> int:
        """Resident set size of the server now, in bytes."""
        assert self._ps is not None, "server not started"
        return int(self._ps.memory_info().rss)

    def uss(self) -> int | None:
        """Unique set size (memory only this process holds), when the platform tells."""
        assert self._ps is not None, "server not started"
        try:
            return int(self._ps.memory_full_info().uss)
        except (psutil.AccessDenied, AttributeError):
            return None

    def cpu_seconds(self) -> float:
        """User plus system CPU time the server has used so far."""
        assert self._ps is not None, "server not started"
        times = self._ps.cpu_times()
        return float(times.user + times.system)

    def log_tail(self, chars: int = 2000) -> str:
        """The end of the server's log."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def __enter__(self) -> Server:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@dataclass
class RssSampler:
    """Samples a server's RSS in the background and keeps the peak.

    Use as ``async with RssSampler(server) as sampler: ...``; ``peak`` and ``samples``
    hold what was seen while the block ran.
    """

    server: Server
    interval: float = 0.05
    peak: int = 0
    samples: list[tuple[float, int]] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    def sample(self) -> int:
        """Read RSS now and account for it."""
        rss = self.server.rss()
        self.peak = max(self.peak, rss)
        self.samples.append((time.monotonic(), rss))
        return rss

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(psutil.Error):
                self.sample()
            await asyncio.sleep(self.interval)

    async def __aenter__(self) -> RssSampler:
        self.sample()
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(psutil.Error):
            self.sample()

    def mean(self, since: float | None = None) -> float | None:
        """Mean RSS over the samples taken at or after ``since`` (monotonic seconds)."""
        values = [rss for t, rss in self.samples if since is None or t >= since]
        return sum(values) / len(values) if values else None


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table with right-aligned columns."""
    cells = [[str(h) for h in headers], *[["-" if v is None else str(v) for v in r] for r in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True))
        for row in cells
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def write_results(name: str, results: dict[str, Any]) -> Path:
    """Write ``results`` as JSON to ``bench/results/<name>.json``; return the path."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(results, indent=2, sort_keys=False) + "\n")
    return path


def revision() -> dict[str, Any]:
    """The commit measured, and whether ``src`` had changes not yet committed."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        try:
            done = subprocess.run(
                ["git", *args], cwd=root, capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return done.stdout.strip()

    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "src_changed": bool(git("status", "--porcelain", "--", "src")),
    }


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    return {
        "cpus": os.cpu_count(),
        "ram_bytes": psutil.virtual_memory().total,
        "python": sys.version.split()[0],
        "platform": sys.platform,
        **revision(),
    }


def load_previous(file_name: str) -> dict[str, Any]:
    """Results of earlier runs in ``file_name``, so a partial run keeps the other parts."""
    try:
        previous: dict[str, Any] = json.loads((RESULTS_DIR / file_name).read_text())
        return previous
    except (OSError, ValueError):
        return {}


def result_key(part: str, label: str | None) -> str:
    """Where a part's result goes in the JSON: ``part``, or ``part:label``."""
    return f"{part}:{label}" if label else part


def add_run_options(parser: argparse.ArgumentParser, *, env_example: str) -> None:
    """``--env NAME=VALUE`` (repeatable) and ``--label``, shared by the memory benchmarks."""
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help=f"extra server setting for every run, e.g. {env_example}",
    )
    parser.add_argument("--label", default="", help="store results under part:label")


def parse_env(items: list[str]) -> dict[str, str]:
    """``NAME=VALUE`` items as a dict."""
    return dict(item.split("=", 1) for item in items)
