"""chatkeep's resident memory: idle, and over a long run with the trend test on it."""

from __future__ import annotations

import argparse
import time
import urllib.request
from pathlib import Path
from typing import Any

import prepare
import processes
import report
import soakgen
from chatkeep.soak.probe import parse_gauges
from processes import Server


def _say(text: str) -> None:
    print(text, flush=True)


def measure_idle(chatkeep: Server, startup: int) -> dict[str, Any]:
    """RSS just after startup, and once a few requests of each kind have been served."""
    prepare.warm_up(chatkeep.url, model="fake", requests=10)
    time.sleep(1.0)
    idle = {"startup_rss": startup, "idle_rss": chatkeep.rss(), "idle_uss": chatkeep.uss()}
    _say(
        f"  idle RSS: {startup / report.MIB:.1f} MiB at startup, "
        f"{idle['idle_rss'] / report.MIB:.1f} MiB after a few requests"
    )
    return idle


def _cache_bytes(chatkeep: Server) -> int | None:
    try:
        with urllib.request.urlopen(f"{chatkeep.url}/metrics", timeout=5.0) as response:
            text = response.read().decode()
    except OSError:
        return None
    value = parse_gauges(text, ("chatkeep_cache_bytes",))
    return None if value is None else int(value)


def run_memory(
    kind: str, fake: Server, work_dir: Path, options: argparse.Namespace
) -> dict[str, Any]:
    """A fresh chatkeep, ``--memory-requests`` requests, RSS sampled against requests."""
    data_dir = work_dir / f"data-memory-{kind}"
    settings = dict(item.split("=", 1) for item in options.memory_setting)
    if options.memory_working_set:
        settings["CHATKEEP_WORKING_SET_BYTES"] = options.memory_working_set
    chatkeep = processes.start_chatkeep(
        work_dir, fake.url, data_dir, label=f"memory-{kind}", settings=settings
    )
    try:
        prepare.warm_up(chatkeep.url, model="fake", requests=10)
        soak = soakgen.memory_run(
            chatkeep.url,
            pid=chatkeep.pid,
            requests=options.memory_requests,
            concurrency=32,
            model="fake",
            per_conversation=options.per_conversation if kind == "durable" else None,
            leak_threshold=report.TARGET_SLOPE,
        )
        time.sleep(1.0)
        settled = chatkeep.rss()
        cache_bytes = _cache_bytes(chatkeep)
    finally:
        chatkeep.stop()
    data = soak.as_dict()
    memory: Any = data["memory"]
    run = {
        "kind": kind,
        "requests": soak.requests,
        "errors": soak.requests - soak.successes,
        "concurrency": 32,
        "per_conversation": options.per_conversation if kind == "durable" else None,
        "working_set_bytes": options.memory_working_set or "default",
        "settings": settings,
        "throughput_rps": soak.throughput,
        "start_rss": memory["start_bytes"],
        "peak_rss": memory["peak_bytes"],
        "end_rss": memory["end_bytes"],
        "settled_rss": settled,
        "cache_bytes_at_end": cache_bytes,
        "slope_bytes_per_request": soak.slope_bytes_per_request,
        "verdict": soak.verdict,
        "trend": memory["trend"],
        "series": memory["series"],
    }
    slope = soak.slope_bytes_per_request
    _say(
        f"  memory {kind}: {soak.requests} requests at {soak.throughput:.0f}/s, RSS "
        f"{run['start_rss'] / report.MIB:.1f} -> {run['end_rss'] / report.MIB:.1f} MiB, "
        f"slope {slope if slope is None else round(slope, 1)} bytes/request ({soak.verdict})"
    )
    return run
