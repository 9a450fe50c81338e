"""What API keys cost the passthrough: chatkeep with ``CHATKEEP_AUTH=keys`` against ``none``.

    .venv/bin/python bench/auth.py --rounds 3

Starts the fake backend and two chatkeep servers in front of it, one per auth mode (the
keys one with a key made by ``chatkeep keys create`` with limits far above the load, so
every request pays the auth and quota layers and none is refused), then measures the
passthrough at c=1 and c=32, JSON, rounds interleaved. Prints each mode's throughput,
p50/p99 and server CPU per request (steadier than throughput on a shared machine), the
direct backend's, and the ratios keys / none. Needs ``wrk``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil

import processes
from load import LoadResult
from wrk import WrkGenerator, find_wrk

ADMIN_TOKEN = "bench-admin-" + "x" * 24


def _create_key(data_dir: Path, backend_url: str) -> str:
    env = processes.chatkeep_env(backend_url, data_dir)
    completed = subprocess.run(
        [
            *processes.chatkeep_command(),
            "keys",
            "create",
            "--owner",
            "bench",
            "--rate",
            "1000000",
            "--burst",
            "1000000",
            "--max-streams",
            "10000",
        ],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    match = re.search(r"\bck_[A-Za-z0-9_-]+", completed.stdout)
    if match is None:
        raise RuntimeError(f"no key in the output of keys create:\n{completed.stdout}")
    return match.group(0)


def _cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def _median(results: list[LoadResult], cpu_us: list[float]) -> dict[str, float]:
    return {
        "cpu_us": statistics.median(cpu_us) if cpu_us else float("nan"),
        "rps": statistics.median(r.requests / r.seconds for r in results),
        "p50": statistics.median(r.latency_ms["p50"] for r in results),
        "p99": statistics.median(r.latency_ms["p99"] for r in results),
        "errors": sum(r.errors for r in results),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    options = parser.parse_args(argv)
    executable = find_wrk()
    if executable is None:
        print("wrk is not installed (apt-get install -y wrk)", file=sys.stderr)
        return 2
    generator = WrkGenerator(executable)
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="chatkeep-auth-")))
        fake = processes.start_fake_llm(work, tokens=16)
        stack.callback(fake.stop)
        key = _create_key(work / "keys-data", fake.url)
        servers = {
            "none": processes.start_chatkeep(work, fake.url, work / "none-data", label="none"),
            "keys": processes.start_chatkeep(
                work,
                fake.url,
                work / "keys-data",
                label="keys",
                settings={"CHATKEEP_AUTH": "keys", "CHATKEEP_ADMIN_TOKEN": ADMIN_TOKEN},
            ),
        }
        for server in servers.values():
            stack.callback(server.stop)
        targets = {"direct": (fake.url, None), "none": (servers["none"].url, None)}
        targets["keys"] = (servers["keys"].url, key)
        pids = {"direct": fake.pid, "none": servers["none"].pid, "keys": servers["keys"].pid}
        table: dict[str, dict[str, dict[str, float]]] = {}
        for concurrency in (1, 32):
            measured: dict[str, list[LoadResult]] = {name: [] for name in targets}
            cpu: dict[str, list[float]] = {name: [] for name in targets}
            for _ in range(options.rounds):
                for name, (url, api_key) in targets.items():
                    generator.passthrough(
                        url,
                        model="fake",
                        stream=False,
                        concurrency=concurrency,
                        seconds=1,
                        api_key=api_key,
                    )
                    before = _cpu_seconds(pids[name])
                    result = generator.passthrough(
                        url,
                        model="fake",
                        stream=False,
                        concurrency=concurrency,
                        seconds=options.seconds,
                        api_key=api_key,
                    )
                    used = _cpu_seconds(pids[name]) - before
                    measured[name].append(result)
                    cpu[name].append(used / max(1, result.requests) * 1e6)
            row = {name: _median(results, cpu[name]) for name, results in measured.items()}
            table[f"c={concurrency}"] = row
            for name, figures in row.items():
                print(
                    f"passthrough json c={concurrency:<2} {name:6} {figures['rps']:9.0f}/s "
                    f"CPU {figures['cpu_us']:5.0f} µs/request "
                    f"p50 {figures['p50']:.3f} ms p99 {figures['p99']:.3f} ms "
                    f"errors {figures['errors']:.0f}"
                )
            ratio = row["keys"]["rps"] / row["none"]["rps"]
            added = row["keys"]["p50"] - row["none"]["p50"]
            cpu_ratio = row["keys"]["cpu_us"] / row["none"]["cpu_us"]
            print(
                f"  keys / none: throughput {ratio:.3f}, CPU per request {cpu_ratio:.3f}; "
                f"added p50 {added * 1000:.0f} µs"
            )
    print(json.dumps(table, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
