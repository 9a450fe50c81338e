"""Resident memory idle → steady → after a 10x burst, on a fresh chatkeep with its defaults.

The load is durable streamed sends (the path that holds the most per request: a reply
stream, its subscriber, two commits). ``steady`` is ``--burst-concurrency`` connections
for ``--steady-seconds``; the burst is ``--burst-factor`` times as many connections for
``--burst-seconds``; then nothing for ``--after-seconds``. RSS is sampled every 50 ms
throughout. Admission is left at its defaults, so the burst is refused in part (429 past
an owner's share of the queue, 503 past the queue), which is part of what it costs.
"""

from __future__ import annotations

import statistics
import threading
import time
from pathlib import Path
from typing import Any

import psutil

import prepare
import processes
from load import Conversations, LoadGenerator
from processes import Server

MIB = 1024 * 1024


class RssThread:
    """Samples a process's RSS every ``interval`` seconds on a thread of its own.

    The load generators run their own event loops (or processes), so the sampling cannot
    share one with them.
    """

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self._process = psutil.Process(pid)
        self._interval = interval
        self._stop = threading.Event()
        self.samples: list[tuple[float, int]] = []
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append((time.monotonic(), int(self._process.memory_info().rss)))
            except psutil.Error:
                return
            self._stop.wait(self._interval)

    def __enter__(self) -> RssThread:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def between(self, start: float, end: float) -> list[int]:
        """The samples taken from ``start`` to ``end`` (monotonic seconds)."""
        return [rss for at, rss in self.samples if start <= at <= end]


def phase(samples: list[int]) -> dict[str, int | None]:
    """The first, median, peak and last RSS of a phase's samples."""
    if not samples:
        return {"first": None, "median": None, "peak": None, "last": None}
    return {
        "first": samples[0],
        "median": int(statistics.median(samples)),
        "peak": max(samples),
        "last": samples[-1],
    }


def _say(text: str) -> None:
    print(text, flush=True)


def _conversations(server: Server, work_dir: Path, name: str, lanes: int) -> Conversations:
    return prepare.create_conversations(
        server.url,
        work_dir / f"burst-{name}.txt",
        count=lanes * 2,
        model="fake",
        per_conversation=20,
    )


def run_burst(
    generator: LoadGenerator, fake: Server, work_dir: Path, options: Any
) -> dict[str, Any]:
    """Start a chatkeep, take it through the four phases, stop it; the raw numbers."""
    steady_lanes = options.burst_concurrency
    burst_lanes = steady_lanes * options.burst_factor
    chatkeep = processes.start_chatkeep(work_dir, fake.url, work_dir / "burst-data", label="burst")
    try:
        prepare.warm_up(chatkeep.url, model="fake", requests=10)
        # Made before the sampling starts: they are not part of any phase.
        steady_set = _conversations(chatkeep, work_dir, "steady", steady_lanes)
        burst_set = _conversations(chatkeep, work_dir, "burst", burst_lanes)
        time.sleep(1.0)
        idle = chatkeep.rss()
        with RssThread(chatkeep.pid) as sampler:
            began = time.monotonic()
            steady = generator.durable(
                chatkeep.url,
                steady_set,
                stream=True,
                concurrency=steady_lanes,
                seconds=options.steady_seconds,
            ).as_dict()
            steady_end = time.monotonic()
            burst = generator.durable(
                chatkeep.url,
                burst_set,
                stream=True,
                concurrency=burst_lanes,
                seconds=options.burst_seconds,
            ).as_dict()
            burst_end = time.monotonic()
            time.sleep(options.after_seconds)
            after_end = time.monotonic()
        after = chatkeep.rss()
    finally:
        chatkeep.stop()
    found = {
        "load": "durable streamed sends (model fake, 16 tokens), admission at its defaults",
        "steady_connections": steady_lanes,
        "burst_connections": burst_lanes,
        "steady_seconds": options.steady_seconds,
        "burst_seconds": options.burst_seconds,
        "after_seconds": options.after_seconds,
        "idle_rss": idle,
        "steady": {"rss": phase(sampler.between(began, steady_end)), "result": steady},
        "burst": {"rss": phase(sampler.between(steady_end, burst_end)), "result": burst},
        "after": {"rss": phase(sampler.between(burst_end, after_end)), "rss_at_end": after},
    }
    steady_rss = found["steady"]["rss"]["last"] or 0
    burst_peak = found["burst"]["rss"]["peak"] or 0
    _say(
        f"  burst: RSS idle {idle / MIB:.1f} MiB, steady ({steady_lanes} connections) "
        f"{steady_rss / MIB:.1f}, burst ({burst_lanes}) peak {burst_peak / MIB:.1f}, "
        f"{options.after_seconds:g} s after {after / MIB:.1f} MiB; burst answers "
        f"{burst['throughput_rps']:.0f}/s, errors {burst['errors']} {burst['error_detail']}"
    )
    return found


def _mib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / MIB:.1f}"


def table(found: dict[str, Any]) -> str:
    """RSS through the four phases, with what the load got."""
    steady, burst = found["steady"], found["burst"]
    after = found["after"]

    def answers(result: dict[str, Any]) -> str:
        errors = result["errors"]
        detail = ", ".join(f"{k} {v:,}" for k, v in result["error_detail"].items())
        refused = f"; {errors:,} not 200 ({detail})" if errors else ""
        return f"{result['throughput_rps']:,.0f} sends/s{refused}"

    lines = [
        "| phase | connections | RSS (MiB) | peak (MiB) | the load |",
        "|---|---:|---:|---:|---|",
        "| idle, after a few requests of each kind and making the load's conversations "
        f"| 0 | {_mib(found['idle_rss'])} | | |",
        f"| steady, {found['steady_seconds']:g} s (RSS at its end) "
        f"| {found['steady_connections']} | {_mib(steady['rss']['last'])} "
        f"| {_mib(steady['rss']['peak'])} | {answers(steady['result'])} |",
        f"| {found['burst_connections'] // found['steady_connections']}x burst, "
        f"{found['burst_seconds']:g} s | {found['burst_connections']} "
        f"| {_mib(burst['rss']['last'])} | {_mib(burst['rss']['peak'])} "
        f"| {answers(burst['result'])} |",
        f"| {found['after_seconds']:g} s after the burst | 0 | {_mib(after['rss_at_end'])} "
        f"| {_mib(after['rss']['peak'])} | |",
    ]
    return "\n".join(lines)
