"""The memory governor's leak verdict on a real server, and what the profiler costs.

Three parts (each selectable; all run when none is named):

``--stable``
    ``--requests`` (20 000) requests of the mixed chat workload (`leak_workload`) without
    a leak: the verdict and slope at the end, and every ``--poll-every`` requests.
``--leak``
    The same workload on a server that leaks ``--leak-bytes`` (4096) per request (the
    wrapper in ``tests/e2e/leaky_server.py``): the request count at which the verdict first
    read ``growing``, the final verdict and slope, and the lines a short
    ``POST /admin/memory/profile`` names.
``--profile``
    Throughput, server CPU per request and RSS in a window with a profile running,
    between two windows without one; and the ``cost`` the endpoint reports.

Each server starts on ``--conversations`` (64) conversations that already hold
``--prefill-turns`` (40) exchanges, written by `memory_populate` before it starts. It samples
memory every 50 requests (``CHATKEEP_MEMORY_SAMPLE_EVERY_REQUESTS``) into a 1024-sample
window, and every 5 s (the default interval). ``--env NAME=VALUE`` adds server settings;
``--label`` keeps such a run's results apart. Results print as tables and go to
``bench/results/leak.json``.

    .venv/bin/python bench/leak.py
    .venv/bin/python bench/leak.py --stable --requests 20000
    .venv/bin/python bench/leak.py --leak --leak-bytes 4096
    .venv/bin/python bench/leak.py --profile --profile-seconds 10
    .venv/bin/python bench/leak.py --env CHATKEEP_SUMMARY_THRESHOLD_TOKENS=1000000000 \\
        --label no-summaries
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from chatkeep.storage.sqlite import DATABASE_FILE
from leak_checkpoints import REPO, leaky_command
from leak_workload import ChatWorkload, DriveResult
from memory_clients import get_json, post_json, session
from memory_server import (
    RssSampler,
    Server,
    add_run_options,
    format_table,
    load_previous,
    machine,
    mib,
    parse_env,
    result_key,
    revision,
    write_results,
)

HERE = Path(__file__).resolve().parent
SAMPLING_ENV = {
    "CHATKEEP_MEMORY_SAMPLE_EVERY_REQUESTS": "50",
    "CHATKEEP_MEMORY_WINDOW_SAMPLES": "1024",
}
#: Targets from the memory-governor issue.
STABLE_SLOPE_TARGET = 100.0
DETECTION_TARGET = 3000


def poll_row(done: int, snapshot: dict[str, Any]) -> dict[str, Any]:
    """The parts of an ``/admin/memory`` snapshot the benchmark keeps."""
    trend = snapshot["trend"]
    rss_trend = snapshot.get("rss_trend") or {}
    return {
        "driven": done,
        "server_requests": snapshot["requests"],
        "rss": snapshot["rss"],
        "accounted_bytes": snapshot.get("accounted_bytes"),
        "verdict": trend["verdict"],
        "slope_per_request": round(trend["slope_per_request"], 1),
        "p_value": trend["p_value"],
        "samples": trend["samples"],
        "rss_verdict": rss_trend.get("verdict"),
        "rss_slope_per_request": round(rss_trend.get("slope_per_request", 0.0), 1),
    }


def prefill(data_dir: Path, args: argparse.Namespace) -> tuple[Path, list[str]]:
    """Conversations with ``--prefill-turns`` earlier exchanges each, made in a separate process.

    Starting from conversations with history means the working set holds full entries from
    the first touch, so what the trend sees later is the steady state, not a cache filling.
    """
    ids_file = data_dir.with_suffix(".ids")
    subprocess.run(
        [
            sys.executable,
            str(HERE / "memory_populate.py"),
            str(data_dir),
            str(args.conversations),
            str(ids_file),
            "--turns",
            str(args.prefill_turns),
        ],
        check=True,
    )
    return data_dir, ids_file.read_text().split()


def stored_summaries(database: Path) -> dict[str, Any]:
    """How many conversations carry a summary, and how long those are (read after the run)."""
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        row = db.execute(
            "SELECT count(summary), coalesce(avg(length(summary)), 0), "
            "coalesce(max(length(summary)), 0) FROM conversations"
        ).fetchone()
    return {"with_summary": row[0], "mean_chars": round(row[1]), "max_chars": row[2]}


def drive_dict(drive: DriveResult) -> dict[str, Any]:
    """A JSON-able view of a workload run."""
    return {
        "requests": drive.requests,
        "seconds": round(drive.seconds, 1),
        "per_second": round(drive.per_second, 1),
        "statuses": dict(drive.statuses),
        "kinds": dict(drive.kinds),
    }


async def profile_under_load(
    client: Any, url: str, workload: ChatWorkload, seconds: float, top: int
) -> tuple[dict[str, Any], DriveResult]:
    """Run ``POST /admin/memory/profile`` while the workload keeps going."""
    task = asyncio.create_task(
        post_json(client, f"{url}/admin/memory/profile", {"seconds": seconds, "top": top})
    )
    drive = await workload.drive(requests=1_000_000, seconds=seconds)
    profile: dict[str, Any] = await asyncio.wait_for(task, timeout=seconds + 120)
    return profile, drive


class VerdictPoller:
    """Reads ``/admin/memory`` every ``every`` requests the workload completes."""

    def __init__(self, client: Any, url: str, every: int) -> None:
        self.client = client
        self.url = url
        self.every = every
        self.polls: list[dict[str, Any]] = []

    async def __call__(self, done: int) -> None:
        if done % self.every:
            return
        snapshot = await get_json(self.client, f"{self.url}/admin/memory")
        self.polls.append(poll_row(done, snapshot))
        if done % (10 * self.every) == 0:
            row = self.polls[-1]
            print(f"  {done}: {row['verdict']} {row['slope_per_request']} B/req", flush=True)


async def drive_and_poll(
    server: Server, ids: list[str], leak_bytes: int, requests: int, args: argparse.Namespace
) -> dict[str, Any]:
    """Run the workload on a started server; the verdict as it went and at the end."""
    rss_start = server.rss()
    async with session(args.concurrency + 2) as client:
        workload = ChatWorkload(client, server.url, ids, args.concurrency)
        poller = VerdictPoller(client, server.url, args.poll_every)
        drive = await workload.drive(requests=requests, seconds=args.timeout, on_request=poller)
        final = await get_json(client, f"{server.url}/admin/memory")
        rss_end = server.rss()
        profile = None
        if leak_bytes:
            profile, _ = await profile_under_load(
                client, server.url, workload, args.leak_profile_seconds, 5
            )
        stats = await get_json(client, f"{server.url}/admin/stats")
    return {
        **summarise_trend(leak_bytes, drive, poller.polls, final, rss_start, rss_end, profile),
        "working_set": stats["caches"]["working_set"],
        "summaries": stats["summaries"],
    }


async def trend_run(leak_bytes: int, requests: int, args: argparse.Namespace) -> dict[str, Any]:
    """One server on prefilled conversations, ``requests`` requests, the verdict polled."""
    env = {"PYTHONPATH": str(REPO), **args.env, **SAMPLING_ENV}
    rev = revision()
    with tempfile.TemporaryDirectory(prefix="chatkeep-bench-") as tmp:
        data_dir, ids = prefill(Path(tmp) / f"leak-{leak_bytes}", args)
        server = Server(data_dir, env, leaky_command(leak_bytes))
        server.start()
        try:
            result = await drive_and_poll(server, ids, leak_bytes, requests, args)
        finally:
            server.stop()
        result["summaries"].update(stored_summaries(data_dir / DATABASE_FILE))
    return {"revision": rev, "extra_env": args.env, **result}


def summarise_trend(
    leak_bytes: int,
    drive: DriveResult,
    polls: list[dict[str, Any]],
    final: dict[str, Any],
    rss_start: int,
    rss_end: int,
    profile: dict[str, Any] | None,
) -> dict[str, Any]:
    """The numbers one trend run reports, with the target it is judged against."""
    trend = final["trend"]
    growing = [row for row in polls if row["verdict"] == "growing"]
    first = growing[0] if growing else None
    result: dict[str, Any] = {
        "leak_bytes_per_request": leak_bytes,
        "workload": drive_dict(drive),
        "server_requests": final["requests"],
        "trend": trend,
        "rss_trend": final.get("rss_trend"),
        "accounted_bytes": final.get("accounted_bytes"),
        "window": final["window"],
        "rss_start": rss_start,
        "rss_end": rss_end,
        "rss_growth_per_request": round((rss_end - rss_start) / max(1, final["requests"]), 1),
        "polls": len(polls),
        "polls_growing": len(growing),
        "first_growing_driven": first["driven"] if first else None,
        "first_growing_server_requests": first["server_requests"] if first else None,
        "poll_series": polls,
    }
    if leak_bytes:
        result["target_met"] = (
            trend["verdict"] == "growing"
            and first is not None
            and first["server_requests"] <= DETECTION_TARGET
        )
        result["profile_top"] = profile["top"] if profile else None
    else:
        result["target_met"] = (
            trend["verdict"] == "stable" and abs(trend["slope_per_request"]) < STABLE_SLOPE_TARGET
        )
    return result


async def measure_window(
    server: Server, client: Any, workload: ChatWorkload, seconds: float, profiled: bool
) -> dict[str, Any]:
    """One window of load, with or without a profile running; throughput, CPU and RSS."""
    cpu_before = server.cpu_seconds()
    profile: dict[str, Any] | None = None
    async with RssSampler(server, interval=0.1) as sampler:
        if profiled:
            profile, drive = await profile_under_load(client, server.url, workload, seconds, 10)
        else:
            drive = await workload.drive(requests=1_000_000, seconds=seconds)
    cpu = server.cpu_seconds() - cpu_before
    return {
        "profiled": profiled,
        "requests": drive.requests,
        "per_second": round(drive.per_second, 1),
        "cpu_ms_per_request": round(1000 * cpu / max(1, drive.requests), 3),
        "rss_mean": sampler.mean(),
        "rss_peak": sampler.peak,
        "statuses": dict(drive.statuses),
        "profile": profile,
    }


async def profiler_overhead(args: argparse.Namespace) -> dict[str, Any]:
    """Windows of the same load on one server: baseline, profiled, baseline, … baseline.

    ``--profile-rounds`` profiled windows, each between two baseline windows; the machine
    is shared, so the ratios are of medians.
    """
    rev = revision()
    pattern = [False, True] * args.profile_rounds + [False]
    with tempfile.TemporaryDirectory(prefix="chatkeep-bench-") as tmp:
        data_dir, ids = prefill(Path(tmp) / "profile", args)
        server = Server(data_dir, {**args.env, **SAMPLING_ENV})
        server.start()
        try:
            async with session(args.concurrency + 2) as client:
                workload = ChatWorkload(client, server.url, ids, args.concurrency)
                warm = await workload.drive(requests=args.warmup, seconds=args.timeout)
                windows = [
                    await measure_window(server, client, workload, args.profile_seconds, p)
                    for p in pattern
                ]
        finally:
            server.stop()
    return {
        "revision": rev,
        "extra_env": args.env,
        "warmup": drive_dict(warm),
        "window_seconds": args.profile_seconds,
        "windows": windows,
        **overhead_ratios(windows),
    }


def overhead_ratios(windows: list[dict[str, Any]]) -> dict[str, Any]:
    """Profiled over baseline: throughput and CPU per request (medians), RSS and cost."""
    profiled = [w for w in windows if w["profiled"]]
    baseline = [w for w in windows if not w["profiled"]]

    def median(rows: list[dict[str, Any]], key: str) -> float:
        return float(statistics.median(row[key] for row in rows))

    # Each profiled window against the baseline window just before it.
    rss_added = [
        windows[i]["rss_peak"] - windows[i - 1]["rss_peak"]
        for i in range(1, len(windows))
        if windows[i]["profiled"]
    ]
    return {
        "throughput_ratio": round(
            median(profiled, "per_second") / median(baseline, "per_second"), 3
        ),
        "cpu_per_request_ratio": round(
            median(profiled, "cpu_ms_per_request") / median(baseline, "cpu_ms_per_request"), 3
        ),
        "rss_peak_added": rss_added,
        "costs": [w["profile"]["cost"] for w in profiled if w["profile"]],
    }


def trend_table(runs: list[dict[str, Any]]) -> str:
    """The trend runs as a table."""
    rows = [
        [
            run["leak_bytes_per_request"],
            run["server_requests"],
            run["trend"]["verdict"],
            round(run["trend"]["slope_per_request"], 1),
            (run.get("rss_trend") or {}).get("verdict"),
            round((run.get("rss_trend") or {}).get("slope_per_request", 0.0), 1),
            f"{run['trend']['p_value']:.2g}",
            run["trend"]["samples"],
            run["first_growing_server_requests"],
            f"{run['polls_growing']}/{run['polls']}",
            mib(run["rss_start"]),
            mib(run["rss_end"]),
            run["summaries"]["max_chars"],
            run["workload"]["per_second"],
            "met" if run["target_met"] else "MISSED",
        ]
        for run in runs
    ]
    headers = [
        "leak B/req",
        "requests",
        "verdict",
        "slope B/req",
        "RSS verdict",
        "RSS slope",
        "p",
        "judged",
        "1st growing",
        "growing polls",
        "RSS start",
        "RSS end",
        "max summary",
        "req/s",
        "target",
    ]
    return format_table(headers, rows)


def profile_table(result: dict[str, Any]) -> str:
    """The profiler-overhead windows as a table."""
    rows = [
        [
            "profiled" if w["profiled"] else "baseline",
            w["requests"],
            w["per_second"],
            w["cpu_ms_per_request"],
            mib(w["rss_mean"]),
            mib(w["rss_peak"]),
        ]
        for w in result["windows"]
    ]
    headers = ["window", "requests", "req/s", "CPU ms/req", "RSS mean", "RSS peak"]
    summary = {k: result[k] for k in ("throughput_ratio", "cpu_per_request_ratio")}
    cost = result["costs"][0] if result["costs"] else None
    return f"{format_table(headers, rows)}\n{json.dumps(summary)}\ncost: {json.dumps(cost)}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; no part flag means all of them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stable", action="store_true", help="the run without a leak")
    parser.add_argument("--leak", action="store_true", help="the run with the injected leak")
    parser.add_argument("--profile", action="store_true", help="the profiler's overhead")
    parser.add_argument("--requests", type=int, default=20_000, help="requests without leak")
    parser.add_argument("--leak-requests", type=int, default=10_000)
    parser.add_argument("--leak-bytes", type=int, default=4096)
    parser.add_argument("--leak-profile-seconds", type=float, default=3.0)
    parser.add_argument("--poll-every", type=int, default=250)
    parser.add_argument("--conversations", type=int, default=64)
    parser.add_argument("--prefill-turns", type=int, default=40, help="history per conversation")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=3000, help="requests before windows")
    parser.add_argument("--profile-seconds", type=float, default=10.0)
    parser.add_argument("--profile-rounds", type=int, default=3, help="profiled windows")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per run")
    add_run_options(parser, env_example="CHATKEEP_SUMMARY_QUEUE_SIZE=0")
    args = parser.parse_args(argv)
    args.env = parse_env(args.env)
    if not (args.stable or args.leak or args.profile):
        args.stable = args.leak = args.profile = True
    return args


async def main(args: argparse.Namespace) -> dict[str, Any]:
    """Run the chosen parts, print their tables and return the results."""
    results = load_previous("leak.json")
    results["machine"] = machine()
    results["sampling"] = SAMPLING_ENV
    runs = []
    if args.stable:
        print(f"no leak: {args.requests} requests", flush=True)
        runs.append(await trend_run(0, args.requests, args))
        results[result_key("stable", args.label)] = runs[-1]
    if args.leak:
        print(f"leak of {args.leak_bytes} B/request: {args.leak_requests} requests", flush=True)
        runs.append(await trend_run(args.leak_bytes, args.leak_requests, args))
        results[result_key("leak", args.label)] = runs[-1]
    if runs:
        print(trend_table(runs), flush=True)
    if args.profile:
        began = time.monotonic()
        profile = await profiler_overhead(args)
        results[result_key("profile", args.label)] = profile
        print(f"profiler overhead ({time.monotonic() - began:.0f} s)")
        print(profile_table(profile), flush=True)
    return results


if __name__ == "__main__":
    options = parse_args()
    output = asyncio.run(main(options))
    print(f"wrote {write_results('leak', output)}")
