"""Start and stop real ``chatkeep serve`` processes for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx


def free_port() -> int:
    """A port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


REPO = Path(__file__).resolve().parents[2]
#: The command line of the real server, before ``serve``.
CHATKEEP = ("-m", "chatkeep")


def leaky(bytes_per_request: int) -> tuple[str, ...]:
    """The command line, before ``serve``, of a server that leaks ``bytes_per_request``."""
    return ("-m", "tests.e2e.leaky_server", "--bytes-per-request", str(bytes_per_request))


class ServerProcess:
    """One ``python -m chatkeep serve`` child process on a free port.

    ``command`` replaces ``-m chatkeep`` (for example with `leaky`); ``serve --port N`` follows.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        env: dict[str, str] | None = None,
        command: Sequence[str] = CHATKEEP,
    ) -> None:
        self.data_dir = data_dir
        self.command = tuple(command)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._env = {
            **os.environ,
            # `python -m tests.e2e.leaky_server` needs the repository on the path.
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
            "CHATKEEP_DATA_DIR": str(data_dir),
            **(env or {}),
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.log = data_dir.parent / f"server-{self.port}.log"

    def start(self, timeout: float = 30.0) -> None:
        """Start the process and wait until ``/healthz`` answers."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, *self.command, "serve", "--port", str(self.port)],
                env=self._env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.05)
        raise TimeoutError(f"server did not become healthy: {self.log.read_text()[-2000:]}")

    def kill(self) -> None:
        """``kill -9``: no chance to clean up."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; return the exit code.

        uvicorn re-raises the signal it caught once its graceful shutdown is done,
        so a clean stop exits with -SIGTERM, as service managers expect.
        """
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid


CLEAN_EXIT = (0, -signal.SIGTERM)
