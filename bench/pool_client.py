"""A streaming client for the pool benchmarks: every reply's time to first token and fate.

wrk cannot see inside a stream, so the tail and failover runs use this aiohttp client:
``concurrency`` lanes each send ``POST /v1/chat/completions`` with ``"stream": true`` and
read the answer as it arrives. The first token is the first chunk with text, not the
first bytes (an OpenAI stream opens with a role chunk carrying no text). A reply
succeeds when it is a ``200`` that ends with ``data: [DONE]`` and carries no error
event; anything else is classified, and a reply cut short says whether its first token
had arrived (a pool may fail over before the first token only).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp
import orjson

#: The body every request sends (the model is put in per run).
PROMPT = "Tell me something about the number 42."


@dataclass(frozen=True, slots=True)
class Outcome:
    """One reply as the client saw it; times in seconds."""

    started: float
    """When it was sent, from the start of the run."""
    latency: float
    ttft: float | None
    kind: str
    """``ok``, ``status_<n>``, ``error_event_before_token``/``_after_token``,
    ``cut_before_token``/``_after_token``, ``connect_error``, ``timeout``."""

    @property
    def ok(self) -> bool:
        return self.kind == "ok"


def percentile(values: Sequence[float], share: float) -> float | None:
    """The nearest-rank percentile (``share`` in [0, 1]); None without values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(share * len(ordered)))
    return ordered[rank - 1]


def summary_ms(values: Sequence[float]) -> dict[str, float | None]:
    """p50, p90, p99 and max of seconds, in milliseconds."""
    shares = {"p50": 0.50, "p90": 0.90, "p99": 0.99, "max": 1.0}
    found = {name: percentile(values, share) for name, share in shares.items()}
    return {name: None if v is None else round(v * 1000, 3) for name, v in found.items()}


@dataclass(frozen=True, slots=True)
class StreamRun:
    """What one run of streamed requests saw."""

    outcomes: list[Outcome]
    seconds: float

    @property
    def requests(self) -> int:
        return len(self.outcomes)

    @property
    def successes(self) -> int:
        return sum(1 for o in self.outcomes if o.ok)

    def kinds(self) -> dict[str, int]:
        return dict(Counter(o.kind for o in self.outcomes))

    def ttft_ms(self) -> dict[str, float | None]:
        """Time to first token of the replies that succeeded."""
        return summary_ms([o.ttft for o in self.outcomes if o.ok and o.ttft is not None])

    def latency_ms(self) -> dict[str, float | None]:
        """Whole-reply latency of the replies that succeeded."""
        return summary_ms([o.latency for o in self.outcomes if o.ok])

    def as_dict(self) -> dict[str, object]:
        return {
            "requests": self.requests,
            "successes": self.successes,
            "success_rate": round(self.successes / self.requests, 6) if self.requests else None,
            "seconds": round(self.seconds, 3),
            "kinds": self.kinds(),
            "ttft_ms": self.ttft_ms(),
            "latency_ms": self.latency_ms(),
        }


async def _one(
    session: aiohttp.ClientSession, url: str, body: bytes, origin: float, reply_seconds: float
) -> Outcome:
    sent = time.perf_counter()
    ttft: float | None = None

    def outcome(kind: str) -> Outcome:
        now = time.perf_counter()
        return Outcome(sent - origin, now - sent, ttft, kind)

    def after(kind: str) -> str:
        return f"{kind}_{'after' if ttft is not None else 'before'}_token"

    try:
        async with asyncio.timeout(reply_seconds):
            async with session.post(url, data=body) as response:
                if response.status != 200:
                    await response.read()
                    return outcome(f"status_{response.status}")
                pending = b""
                async for data in response.content.iter_any():
                    pending += data
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        if not line.startswith(b"data:"):
                            continue
                        payload = line[5:].strip()
                        if payload == b"[DONE]":
                            return outcome("ok")
                        if b'"error"' in payload and orjson.loads(payload).get("error"):
                            return outcome(after("error_event"))
                        if ttft is None and _has_text(payload):
                            ttft = time.perf_counter() - sent
                return outcome(after("cut"))
    except TimeoutError:
        return outcome("timeout")
    except aiohttp.ClientPayloadError:
        return outcome(after("cut"))
    except (aiohttp.ClientConnectionError, OSError):
        return outcome(after("cut") if ttft is not None else "connect_error")


def _has_text(payload: bytes) -> bool:
    if b'"content"' not in payload:
        return False
    choices = orjson.loads(payload).get("choices") or [{}]
    return bool((choices[0].get("delta") or {}).get("content"))


async def run_streams(
    base_url: str,
    model: str,
    *,
    concurrency: int,
    requests: int | None = None,
    seconds: float | None = None,
    reply_seconds: float = 30.0,
) -> StreamRun:
    """``requests`` replies (or as many as ``seconds`` allow) over ``concurrency`` lanes.

    A reply still running after ``reply_seconds`` is given up as a ``timeout``.
    """
    if (requests is None) == (seconds is None):
        raise ValueError("give requests or seconds, not both")
    url = f"{base_url}/v1/chat/completions"
    body = orjson.dumps(
        {"model": model, "stream": True, "messages": [{"role": "user", "content": PROMPT}]}
    )
    outcomes: list[Outcome] = []
    origin = time.perf_counter()
    end = origin + seconds if seconds is not None else math.inf
    left = [requests if requests is not None else math.inf]
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def lane() -> None:
            while left[0] > 0 and time.perf_counter() < end:
                left[0] -= 1
                outcomes.append(await _one(session, url, body, origin, reply_seconds))

        await asyncio.gather(*(lane() for _ in range(concurrency)))
    return StreamRun(outcomes, time.perf_counter() - origin)
