"""Load with the soak engine (`chatkeep.soak.run_soak`): the fallback generator, time to first
token, and the long memory run.

The soak engine is an aiohttp client in this Python process. It costs the machine more per
request than wrk, so as the main generator it understates what the server sustains; it is
the right tool where the client must read a stream as it arrives (time to first token) and
where memory is sampled against requests served (the trend test).
"""

from __future__ import annotations

import asyncio

from chatkeep.soak import SoakConfig, SoakReport, run_soak
from load import Conversations, LoadResult

#: The message the soak sends; ``{n}`` keeps every message distinct.
MESSAGE = "Benchmark message {n}: tell me something about the number {n}."
_STATS = ("mean", "p50", "p90", "p99", "max")


def _result(report: SoakReport) -> LoadResult:
    latency = report.latency_ms or {}
    ttft = report.ttft_ms
    return LoadResult(
        generator="soak",
        requests=report.requests,
        errors=report.requests - report.successes,
        seconds=report.duration,
        latency_ms={key: float(latency.get(key, 0.0)) for key in _STATS},
        error_detail=dict(report.errors),
        ttft_ms=({key: float(ttft[key]) for key in _STATS} if ttft else None),
    )


def run(config: SoakConfig) -> SoakReport:
    """One soak run, in an event loop of its own."""
    return asyncio.run(run_soak(config))


class SoakGenerator:
    """The soak engine as a `load.LoadGenerator`, for machines without wrk."""

    name = "soak"

    def passthrough(
        self, base_url: str, *, model: str, stream: bool, concurrency: int, seconds: float
    ) -> LoadResult:
        config = SoakConfig(
            openai_url=base_url,
            model=model,
            stream=stream,
            duration=seconds,
            concurrency=concurrency,
            message=MESSAGE,
            timeout=10.0,
        )
        return _result(run(config))

    def durable(
        self,
        base_url: str,
        conversations: Conversations,
        *,
        stream: bool,
        concurrency: int,
        seconds: float,
    ) -> LoadResult:
        # The soak engine opens its own conversations, one lane at a time, and does not
        # count that in the latency; the ones made for wrk are left alone.
        config = SoakConfig(
            url=base_url,
            model=conversations.model,
            stream=stream,
            duration=seconds,
            concurrency=concurrency,
            messages_per_conversation=conversations.per_conversation,
            message=MESSAGE,
            timeout=10.0,
        )
        return _result(run(config))


def time_to_first_token(
    base_url: str, *, model: str, requests: int, durable: bool = False, per_conversation: int = 20
) -> LoadResult:
    """Streams one at a time; the result carries ``ttft_ms``.

    ``durable`` streams a conversation send on chatkeep (first ``delta`` event) instead of a
    chat completion (first chunk with content).
    """
    if durable:
        config = SoakConfig(
            url=base_url,
            model=model,
            stream=True,
            requests=requests,
            concurrency=1,
            messages_per_conversation=per_conversation,
            message=MESSAGE,
            timeout=10.0,
        )
    else:
        config = SoakConfig(
            openai_url=base_url,
            model=model,
            stream=True,
            requests=requests,
            concurrency=1,
            message=MESSAGE,
            timeout=10.0,
        )
    return _result(run(config))


def memory_run(
    base_url: str,
    *,
    pid: int,
    requests: int,
    concurrency: int,
    model: str,
    per_conversation: int | None,
    leak_threshold: float,
) -> SoakReport:
    """``requests`` requests with the server's RSS sampled against requests served.

    ``per_conversation`` set: durable sends on conversations of that many messages;
    ``None``: stateless chat completions.
    """
    config = SoakConfig(
        url=base_url if per_conversation is not None else None,
        openai_url=base_url if per_conversation is None else None,
        model=model,
        messages_per_conversation=per_conversation or 0,
        requests=requests,
        concurrency=concurrency,
        pid=pid,
        sample_interval=0.05,
        leak_threshold=leak_threshold,
        message=MESSAGE,
        timeout=30.0,
        max_memory_samples=4096,
    )
    return run(config)
