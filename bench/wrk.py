"""Load with ``wrk``: Lua scripts make the POST bodies, and their ``done`` prints the result.

Each script in ``bench/lua/`` gets ``report.lua`` appended, whose ``done`` callback writes one
``BENCH_RESULT {...}`` line of JSON (latency percentiles in microseconds) that is parsed here.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

from load import Conversations, LoadResult

LUA_DIR = Path(__file__).parent / "lua"
_MARKER = "BENCH_RESULT "
#: wrk gives up on a request after this long and counts a timeout.
REQUEST_TIMEOUT = "10s"


def find_wrk() -> str | None:
    """The path of ``wrk`` when it is installed."""
    return shutil.which("wrk")


class WrkGenerator:
    """Runs ``wrk`` for each case."""

    name = "wrk"

    def __init__(self, executable: str) -> None:
        self._executable = executable
        self.version = _version(executable)

    def passthrough(
        self,
        base_url: str,
        *,
        model: str,
        stream: bool,
        concurrency: int,
        seconds: float,
        api_key: str | None = None,
    ) -> LoadResult:
        # Two threads at most: one per core is what wrk wants, and there are two cores here.
        threads = min(concurrency, 2)
        return self._run(
            "passthrough.lua",
            f"{base_url}/v1/chat/completions",
            [model, "stream" if stream else "json", api_key or ""],
            connections=concurrency,
            threads=threads,
            seconds=seconds,
        )

    def durable(
        self,
        base_url: str,
        conversations: Conversations,
        *,
        stream: bool,
        concurrency: int,
        seconds: float,
    ) -> LoadResult:
        # One connection per thread: the script gives each thread its own conversations.
        args = [
            str(conversations.path),
            str(conversations.per_conversation),
            "stream" if stream else "json",
            str(concurrency),
        ]
        return self._run(
            "durable.lua",
            base_url,
            args,
            connections=concurrency,
            threads=concurrency,
            seconds=seconds,
        )

    def _run(
        self,
        script_name: str,
        url: str,
        args: list[str],
        *,
        connections: int,
        threads: int,
        seconds: float,
    ) -> LoadResult:
        script = (LUA_DIR / script_name).read_text() + "\n" + (LUA_DIR / "report.lua").read_text()
        with tempfile.NamedTemporaryFile("w", suffix=".lua", prefix="bench-") as handle:
            handle.write(script)
            handle.flush()
            command = [
                self._executable,
                f"--threads={threads}",
                f"--connections={connections}",
                f"--duration={max(1, round(seconds))}s",
                f"--timeout={REQUEST_TIMEOUT}",
                f"--script={handle.name}",
                url,
                "--",
                *args,
            ]
            completed = subprocess.run(
                command, capture_output=True, text=True, timeout=seconds + 60, check=False
            )
        return parse_output(completed.stdout, completed.stderr, completed.returncode)


def parse_output(stdout: str, stderr: str, returncode: int) -> LoadResult:
    """The result line a wrk run printed; `RuntimeError` without one."""
    for line in stdout.splitlines():
        if line.startswith(_MARKER):
            raw = json.loads(line[len(_MARKER) :])
            break
    else:
        raise RuntimeError(f"wrk exited with {returncode} and no result:\n{stdout}\n{stderr}")
    latency = {key: value / 1000.0 for key, value in raw["latency_us"].items()}
    detail = {key: value for key, value in raw["errors"].items() if value}
    # Socket errors do not always end a request wrk counted; status errors always do.
    errors = min(raw["requests"], sum(detail.values()))
    return LoadResult(
        generator="wrk",
        requests=raw["requests"],
        errors=errors,
        seconds=raw["duration_us"] / 1e6,
        latency_ms={key: round(latency[key], 3) for key in ("mean", "p50", "p90", "p99", "max")},
        error_detail=detail,
    )


def _version(executable: str) -> str:
    completed = subprocess.run(
        [executable, "--version"], capture_output=True, text=True, timeout=10, check=False
    )
    first = (completed.stdout or completed.stderr).strip().splitlines()
    return first[0] if first else "wrk"
