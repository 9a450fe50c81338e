"""Streams sustained: how many streamed replies at once arrive whole and on time.

A fake backend paces its tokens (``--delay-ms D`` before each of ``--tokens T``), so every
reply has a known rhythm. ``N`` replies are started together (`streams_client`) against the
backend directly, through chatkeep's passthrough (``/v1/chat/completions``) and as durable
sends (``POST /api/conversations/{id}/messages``, streamed), for each ``N`` asked. A token
is *lost* when it never arrives (or arrives out of order), *late* when the gap since the
previous one is over twice the backend's own (``2 D``). ``N`` is sustained when nothing
was lost, late or failed; alongside, the time to first token at the median and the longest
gap within a reply at p99, against the direct backend, and chatkeep's peak RSS. Each
``N`` runs twice back to back and the second is the one measured: the first opens
chatkeep's connections to the backend (``N`` at once, while the second finds them open,
as a gateway in service would); its numbers are kept as ``cold``.

chatkeep runs with its limits raised for ``N`` replies at once (generations in flight and
queued, an owner's share of the queue, the backend connection pool): the defaults would
refuse or queue most of them, which is what they are for, not what is measured here.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from collections.abc import Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any

import orjson
import psutil

import prepare
import processes
from frontier import run_loop
from memory_server import RssSampler
from processes import Server
from streams_client import StreamRequest, StreamTrace, run_streams

PROMPT = "Tell me a story."
MIB = 1024 * 1024


def _percentile(values: Sequence[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(share * len(ordered))) - 1]


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 2)


def summarize(traces: Sequence[StreamTrace], *, tokens: int, gap_seconds: float) -> dict[str, Any]:
    """What ``traces`` say about lost and late tokens, first tokens and gaps."""
    late_after = 2 * gap_seconds
    gaps: list[float] = []
    longest: list[float] = []
    for trace in traces:
        own = [later - earlier for earlier, later in pairwise(trace.arrivals)]
        gaps.extend(own)
        if own:
            longest.append(max(own))
    first = [trace.arrivals[0] - trace.sent for trace in traces if trace.arrivals]
    delivered = sum(len(trace.arrivals) for trace in traces)
    expected = tokens * len(traces)
    late = sum(1 for gap in gaps if gap > late_after)
    failed = Counter(trace.failure for trace in traces if trace.failure is not None)
    wrong = sum(trace.wrong for trace in traces)
    return {
        "streams": len(traces),
        "tokens_expected": expected,
        "tokens_delivered": delivered,
        "tokens_lost": expected - delivered,
        "tokens_wrong": wrong,
        "failed": dict(failed),
        "late_gaps": late,
        "late_after_ms": _ms(late_after),
        "ttft_ms": {"p50": _ms(_percentile(first, 0.5)), "p99": _ms(_percentile(first, 0.99))},
        "longest_gap_ms": {
            "p50": _ms(_percentile(longest, 0.5)),
            "p99": _ms(_percentile(longest, 0.99)),
            "max": _ms(max(longest, default=None)),
        },
        "gap_ms": {"p50": _ms(_percentile(gaps, 0.5)), "p99": _ms(_percentile(gaps, 0.99))},
        "sustained": expected == delivered and late == 0 and not failed and wrong == 0,
    }


def _say(text: str) -> None:
    print(text, flush=True)


def chatkeep_settings(backend_url: str, streams: int) -> dict[str, str]:
    """chatkeep's limits raised for ``streams`` replies at once, nothing else changed."""
    models = {
        "fake": {
            "provider": "openai",
            "url": backend_url,
            "upstream_model": "fake",
            "max_connections": streams + 64,
        },
        "echo": {"provider": "echo"},
    }
    return {
        "CHATKEEP_MODELS": json.dumps(models),
        "CHATKEEP_MAX_INFLIGHT_GENERATIONS": str(streams + 64),
        "CHATKEEP_MAX_QUEUED_GENERATIONS": str(streams + 64),
        "CHATKEEP_MAX_QUEUED_PER_OWNER": str(streams + 64),
    }


def _request(server: Server, paths: list[str], durable: bool) -> StreamRequest:
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    if durable:
        body = orjson.dumps({"content": PROMPT, "stream": True})
    else:
        body = orjson.dumps(
            {"model": "fake", "stream": True, "messages": [{"role": "user", "content": PROMPT}]}
        )
    return StreamRequest(host=host, port=int(port), paths=paths, body=body, durable=durable)


def _cpu_seconds(server: Server) -> float:
    times = psutil.Process(server.pid).cpu_times()
    return float(times.user + times.system)


async def _measured(
    request: StreamRequest,
    chatkeep: Server | None,
    backend: Server,
    *,
    tokens: int,
    reply_seconds: float,
) -> tuple[list[StreamTrace], dict[str, Any]]:
    """The run's traces; chatkeep's RSS before and at the peak; the CPU each process used.

    CPU is a share of one core over the run (an event loop cannot use more than one).
    """
    servers = (
        {"backend": backend} if chatkeep is None else {"backend": backend, "chatkeep": chatkeep}
    )
    cpu, wall = time.process_time(), time.perf_counter()
    server_cpu = {name: _cpu_seconds(server) for name, server in servers.items()}
    if chatkeep is None:
        traces = await run_streams(request, tokens=tokens, reply_seconds=reply_seconds)
        before = peak = None
    else:
        # RssSampler reads ``rss()`` of what it is given: a bench `Server` here.
        async with RssSampler(chatkeep, interval=0.02) as sampler:
            before = sampler.samples[0][1]
            traces = await run_streams(request, tokens=tokens, reply_seconds=reply_seconds)
        peak = sampler.peak
    elapsed = time.perf_counter() - wall
    shares = {"client": (time.process_time() - cpu) / elapsed}
    for name, server in servers.items():
        shares[name] = (_cpu_seconds(server) - server_cpu[name]) / elapsed
    return traces, {
        "rss_before": before,
        "rss_peak": peak,
        "seconds": round(elapsed, 3),
        "cpu_share": {name: round(share, 3) for name, share in shares.items()},
    }


def run_streams_part(work_dir: Path, options: Any) -> dict[str, Any]:
    """Every ``N`` of ``--streams-counts`` against the three targets; the raw numbers."""
    counts = [int(n) for n in options.streams_counts.split(",") if n.strip()]
    tokens, delay_ms = options.stream_tokens, options.stream_delay_ms
    gap = delay_ms / 1000.0
    reply_seconds = tokens * gap + 60.0
    fake = processes.start_fake_llm_with(
        work_dir, ["--tokens", str(tokens), "--delay-ms", f"{delay_ms:g}"], name="streams-fake"
    )
    found: dict[str, Any] = {
        "tokens": tokens,
        "delay_ms": delay_ms,
        "counts": counts,
        "runs": [],
    }
    try:
        settings = chatkeep_settings(fake.url, max(counts))
        chatkeep = processes.start_chatkeep(
            work_dir, fake.url, work_dir / "streams-data", label="streams", settings=settings
        )
        try:
            found["settings"] = {k: v for k, v in settings.items() if k != "CHATKEEP_MODELS"}
            found["settings"]["model max_connections"] = max(counts) + 64
            prepare.warm_up(chatkeep.url, model="fake", requests=10)
            found["idle_rss"] = chatkeep.rss()
            targets = (("direct", fake, False), ("passthrough", chatkeep, False))
            targets += (("durable", chatkeep, True),)
            for count in counts:
                for name, server, durable in targets:
                    paths = ["/v1/chat/completions"] * count
                    if durable:
                        conversations = prepare.create_conversations(
                            chatkeep.url,
                            work_dir / f"streams-conversations-{count}.txt",
                            count=count,
                            model="fake",
                            per_conversation=2,
                        )
                        ids = conversations.path.read_text().split()
                        paths = [f"/api/conversations/{cid}/messages" for cid in ids]
                    request = _request(server, paths, durable)
                    watched = None if name == "direct" else chatkeep
                    runs = [
                        run_loop(
                            _measured(
                                request,
                                watched,
                                fake,
                                tokens=tokens,
                                reply_seconds=reply_seconds,
                            )
                        )
                        for _ in range(2)
                    ]
                    # The first opens what the second finds open (chatkeep's backend
                    # connections, kept 4 s): the second is the measured one.
                    cold, warm = (
                        {**summarize(traces, tokens=tokens, gap_seconds=gap), **measured}
                        for traces, measured in runs
                    )
                    warm.update({"target": name, "cold": cold})
                    # Memory is judged over both runs: the first opens N connections more.
                    peaks = [run["rss_peak"] for run in (cold, warm) if run["rss_peak"]]
                    warm["rss_peak"] = max(peaks, default=None)
                    found["runs"].append(warm)
                    _say(f"  streams {count:5} {name:11} {_describe(warm)}")
                    _say(f"        (cold run: {_describe(cold)})")
        finally:
            chatkeep.stop()
    finally:
        fake.stop()
    return found


def _describe(run: dict[str, Any]) -> str:
    rss = f"  peak RSS {run['rss_peak'] / MIB:.1f} MiB" if run["rss_peak"] else ""
    failed = f"  failed {run['failed']}" if run["failed"] else ""
    return (
        f"tokens {run['tokens_delivered']}/{run['tokens_expected']}  late {run['late_gaps']}  "
        f"TTFT p50 {run['ttft_ms']['p50']} ms  longest gap p99 {run['longest_gap_ms']['p99']} ms"
        f"{rss}  CPU "
        + ", ".join(f"{name} {share:.0%}" for name, share in run["cpu_share"].items())
        + failed
    )
