"""Pool overhead: the ``/v1`` passthrough through a one-backend pool against today's plain
one-backend model, in one server, over one fake backend.

Both models reach the same fake backend through the same connection pool (one per
origin), so the only difference is the pool's code on the path. ``wrk`` loads each
target in turn, round after round (interleaved, so drift on a shared machine lands on
both), after an unmeasured warm-up; the numbers are the medians over rounds. The direct
backend is measured in the same rounds as a yardstick.

Throughput on a shared two-core machine moves by ±20% from one run to the next when a
neighbour wakes, so each run also reads the serving process's own CPU time (user +
system, from ``/proc`` through psutil) and divides it by the requests served: CPU per
request hardly notices neighbours, and the pool's cost is its difference.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

import psutil

import pool_control
import processes
from load import LoadResult
from pool_profile import read_profile, sampling
from wrk import WrkGenerator

#: The fake backend itself, chatkeep's plain model and its one-backend pool.
TARGETS = ("direct", "plain", "pool")
CONCURRENCY = (1, 32)


def _say(text: str) -> None:
    print(text, flush=True)


def _median(results: list[tuple[LoadResult, float]]) -> dict[str, Any]:
    loads = [load for load, _ in results]
    return {
        "rps": round(statistics.median(r.throughput for r in loads), 1),
        "p50_ms": statistics.median(r.latency_ms["p50"] for r in loads),
        "p99_ms": statistics.median(r.latency_ms["p99"] for r in loads),
        "cpu_us_per_request": round(statistics.median(cpu for _, cpu in results), 1),
        "errors": sum(r.errors for r in loads),
        "rounds": [{**load.as_dict(), "cpu_us_per_request": cpu} for load, cpu in results],
    }


def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def _load(
    generator: WrkGenerator,
    server: processes.Server,
    name: str,
    concurrency: int,
    options: argparse.Namespace,
    profile: Path | None = None,
) -> tuple[LoadResult, float]:
    """A warm-up, then the measured run of one target, and its server's µs of CPU a request.

    With ``profile``, py-spy samples the server during the measured run into that file.
    """
    # The direct backend takes any model name; chatkeep routes on it.
    model = name if name != "direct" else "fake"
    process = psutil.Process(server.pid)

    def run(seconds: float) -> LoadResult:
        return generator.passthrough(
            server.url, model=model, stream=False, concurrency=concurrency, seconds=seconds
        )

    run(options.warmup)
    before = _cpu_seconds(process)
    if profile is None:
        result = run(options.seconds)
    else:
        with sampling(options.py_spy, server.pid, profile):
            result = run(options.seconds)
    cpu = _cpu_seconds(process) - before
    return result, round(cpu / max(1, result.requests) * 1e6, 1)


def _profiled(
    generator: WrkGenerator,
    server: processes.Server,
    concurrency: int,
    work_dir: Path,
    options: argparse.Namespace,
) -> dict[str, Any]:
    """One more run of each chatkeep model under py-spy: µs a request in the pool's frames."""
    found: dict[str, Any] = {}
    for name in ("plain", "pool"):
        path = work_dir / f"profile-{name}-{concurrency}.txt"
        result, cpu = _load(generator, server, name, concurrency, options, profile=path)
        found[name] = {
            "requests": result.requests,
            "cpu_us_per_request": cpu,
            **read_profile(path).per_request_us(result.requests),
        }
    return found


def run_overhead(
    generator: WrkGenerator, work_dir: Path, options: argparse.Namespace
) -> dict[str, Any]:
    """Start a fake backend and chatkeep with both models, load them, stop them."""
    fake = processes.start_fake_llm_with(work_dir, ["--tokens", "16"], name="overhead-fake")
    try:
        models = {
            "plain": {"provider": "openai", "url": fake.url, "upstream_model": "fake"},
            "pool": pool_control.pool_model([fake.url]),
        }
        settings = pool_control.chatkeep_settings(models, default="plain")
        chatkeep = processes.start_chatkeep(
            work_dir, fake.url, work_dir / "overhead-data", label="overhead", settings=settings
        )
        try:
            servers = {"direct": fake, "plain": chatkeep, "pool": chatkeep}
            cases = []
            for concurrency in CONCURRENCY:
                measured: dict[str, list[tuple[LoadResult, float]]] = {n: [] for n in TARGETS}
                for round_number in range(options.rounds):
                    # ABBA order: a drift over the run lands on both sides alike.
                    order = TARGETS if round_number % 2 == 0 else TARGETS[::-1]
                    for name in order:
                        measured[name].append(
                            _load(generator, servers[name], name, concurrency, options)
                        )
                case = {name: _median(results) for name, results in measured.items()}
                for name in TARGETS:
                    row = case[name]
                    _say(
                        f"  passthrough json c={concurrency:<2} {name:6} {row['rps']:8.0f}/s "
                        f"p50 {row['p50_ms']:.3f} ms p99 {row['p99_ms']:.3f} ms "
                        f"CPU {row['cpu_us_per_request']:.0f} µs/request errors {row['errors']}"
                    )
                if options.py_spy is not None:
                    case["profile"] = _profiled(generator, chatkeep, concurrency, work_dir, options)
                    _say(f"  profiled c={concurrency}: {case['profile']}")
                cases.append({"concurrency": concurrency, **case})
        finally:
            chatkeep.stop()
    finally:
        fake.stop()
    return {
        "stream": False,
        "seconds": options.seconds,
        "warmup_seconds": options.warmup,
        "rounds": options.rounds,
        "profiled": options.py_spy is not None,
        "cases": cases,
    }


def overhead_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Per concurrency: the pool's throughput ratio to the plain model and its added p50."""
    rows = []
    for case in data["cases"]:
        plain, pool = case["plain"], case["pool"]
        ratio = pool["rps"] / plain["rps"] if plain["rps"] else None
        # Each round's pool against the plain model measured next to it.
        paired = [
            round(b["throughput_rps"] / a["throughput_rps"], 3)
            for a, b in zip(plain["rounds"], pool["rounds"], strict=True)
        ]
        rows.append(
            {
                "concurrency": case["concurrency"],
                "round_ratios": paired,
                "direct_rps": case["direct"]["rps"],
                "plain_rps": plain["rps"],
                "pool_rps": pool["rps"],
                "throughput_ratio": None if ratio is None else round(ratio, 4),
                "plain_p50_ms": plain["p50_ms"],
                "pool_p50_ms": pool["p50_ms"],
                "added_p50_us": round((pool["p50_ms"] - plain["p50_ms"]) * 1000, 1),
                "plain_cpu_us": plain["cpu_us_per_request"],
                "pool_cpu_us": pool["cpu_us_per_request"],
                "added_cpu_us": round(pool["cpu_us_per_request"] - plain["cpu_us_per_request"], 1),
                "pool_frames_us": (case.get("profile") or {}).get("pool", {}).get("pool_frames_us"),
                "errors": plain["errors"] + pool["errors"],
                "met": ratio is not None
                and ratio > 0.95
                and (pool["p50_ms"] - plain["p50_ms"]) * 1000 < 50,
            }
        )
    return rows


def overhead_table(data: dict[str, Any]) -> str:
    """The markdown table of the pool's overhead."""
    lines = [
        "| passthrough JSON | direct | plain model | one-backend pool | pool / plain "
        "| pool / plain, each round | p50 plain | p50 pool | added p50 "
        "| CPU / request plain | pool | added | in pool frames (profile) | target |",
        "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in overhead_rows(data):
        frames = row["pool_frames_us"]
        lines.append(
            f"| c={row['concurrency']} | {row['direct_rps']:.0f}/s | {row['plain_rps']:.0f}/s "
            f"| {row['pool_rps']:.0f}/s | {row['throughput_ratio']:.3f} "
            f"| {', '.join(f'{r:.2f}' for r in row['round_ratios'])} "
            f"| {row['plain_p50_ms'] * 1000:.0f} µs | {row['pool_p50_ms'] * 1000:.0f} µs "
            f"| {row['added_p50_us']:+.0f} µs | {row['plain_cpu_us']:.0f} µs "
            f"| {row['pool_cpu_us']:.0f} µs | {row['added_cpu_us']:+.1f} µs "
            f"| {'-' if frames is None else f'{frames:.1f} µs'} "
            f"| {'met' if row['met'] else 'missed'} |"
        )
    return "\n".join(lines)
