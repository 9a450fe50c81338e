"""What the pool's own code costs a request, read from a sampling profile of the server.

On a shared two-core machine the throughput of two runs side by side differs by more
than a pool could cost, so the cost is also read where neighbours cannot blur it:
``py-spy record`` samples the server while it is loaded, and the samples whose innermost
frame is in one of the pool's modules, divided by the requests served, are the pool's
own CPU per request (resumed coroutine frames, balancing, health and breaker
bookkeeping, the body wrapper). py-spy reads the process from outside without stopping
it (``--nonblocking``); it is optional, found beside this interpreter or on the PATH.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

#: Samples a second; each stands for 1/RATE s of the sampled thread's time.
RATE = 500
#: The pool's modules (``chatkeep.providers``): a frame in one of these is the pool's.
POOL_MODULES = tuple(
    f"chatkeep/providers/{name}.py"
    for name in ("pool", "attempts", "health", "balancing", "retrying", "hedging", "backend")
)


def find_py_spy() -> str | None:
    """The ``py-spy`` executable, if installed."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


@dataclass(frozen=True, slots=True)
class Profile:
    """Where a server spent its sampled time, per request."""

    samples: int
    pool_samples: int

    def per_request_us(self, requests: int) -> dict[str, float]:
        """Sampled time and time in the pool's own frames, in µs per request."""
        scale = 1e6 / RATE / max(1, requests)
        return {
            "sampled_us": round(self.samples * scale, 1),
            "pool_frames_us": round(self.pool_samples * scale, 1),
        }


def read_profile(path: Path) -> Profile:
    """Count a ``py-spy --format raw`` file: one folded stack and its samples a line."""
    samples = pool = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        samples += int(count)
        innermost = stack.rsplit(";", 1)[-1]
        if any(module in innermost for module in POOL_MODULES):
            pool += int(count)
    return Profile(samples, pool)


@contextmanager
def sampling(executable: str, pid: int, output: Path) -> Iterator[None]:
    """Sample ``pid`` while the block runs; the folded stacks are in ``output`` after it."""
    command = [
        executable,
        "record",
        "--pid",
        str(pid),
        "--rate",
        str(RATE),
        "--format",
        "raw",
        "--nonblocking",
        "--output",
        str(output),
    ]
    recorder = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        # py-spy writes what it sampled when interrupted, as on Ctrl-C.
        recorder.send_signal(signal.SIGINT)
        recorder.wait(30)
