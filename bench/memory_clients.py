"""HTTP clients for the memory and leak benchmarks: bounded, concurrent, loopback only.

Every loop here is bounded by a count and a deadline, so a server that stops answering
ends a run with an error instead of hanging it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

#: Whole-request timeout for the plain JSON calls the benchmarks make.
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=120)


def session(limit: int = 100) -> aiohttp.ClientSession:
    """A client session with at most ``limit`` connections (0: no limit)."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limit, force_close=False),
        timeout=REQUEST_TIMEOUT,
    )


async def get_json(client: aiohttp.ClientSession, url: str) -> Any:
    """GET ``url`` and return its JSON body (raises on a non-2xx answer)."""
    async with client.get(url) as response:
        response.raise_for_status()
        return await response.json()


async def get_json_once(url: str, path: str) -> Any:
    """GET ``url + path`` on a session of its own and return the JSON body."""
    async with session(1) as client:
        return await get_json(client, f"{url}{path}")


async def post_json(client: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> Any:
    """POST ``body`` to ``url`` and return the JSON answer (raises on a non-2xx answer)."""
    async with client.post(url, json=body) as response:
        response.raise_for_status()
        return await response.json()


async def run_bounded(
    items: Sequence[str],
    work: Callable[[str], Awaitable[None]],
    *,
    concurrency: int,
    deadline: float,
) -> None:
    """Run ``work(item)`` for every item, ``concurrency`` at a time, until ``deadline``.

    ``deadline`` is on the `time.monotonic` clock; items not started by then are skipped.
    """
    position = 0

    async def worker() -> None:
        nonlocal position
        while position < len(items) and time.monotonic() < deadline:
            item = items[position]
            position += 1
            await work(item)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


@dataclass
class SendTally:
    """Statuses and latencies of a batch of sends."""

    statuses: Counter[str] = field(default_factory=Counter)
    latencies: dict[str, list[float]] = field(default_factory=dict)
    retry_after: Counter[str] = field(default_factory=Counter)

    def add(self, status: str, seconds: float, retry_after: str | None = None) -> None:
        """Count one answer."""
        self.statuses[status] += 1
        self.latencies.setdefault(status, []).append(seconds)
        if retry_after is not None:
            self.retry_after[retry_after] += 1

    @property
    def total(self) -> int:
        """Answers counted."""
        return sum(self.statuses.values())


async def send_message(
    client: aiohttp.ClientSession,
    url: str,
    conversation_id: str,
    content: str,
    tally: SendTally,
) -> None:
    """Send one message (JSON answer) and count its status; transport errors count too."""
    began = time.monotonic()
    try:
        async with client.post(
            f"{url}/api/conversations/{conversation_id}/messages", json={"content": content}
        ) as response:
            await response.read()
            retry_after = response.headers.get("Retry-After") if response.status == 503 else None
            tally.add(str(response.status), time.monotonic() - began, retry_after)
    except (aiohttp.ClientError, TimeoutError) as exc:
        tally.add(type(exc).__name__, time.monotonic() - began)


async def create_conversations(url: str, count: int, *, concurrency: int = 32) -> list[str]:
    """Create ``count`` conversations through the API; return their ids."""
    ids: list[str] = []
    async with session(concurrency) as client:

        async def create(_: str) -> None:
            body = await post_json(client, f"{url}/api/conversations", {})
            ids.append(body["id"])

        await run_bounded(
            [""] * count, create, concurrency=concurrency, deadline=time.monotonic() + 600
        )
    if len(ids) != count:
        raise RuntimeError(f"created {len(ids)} of {count} conversations")
    return ids


async def wait_until_idle(url: str, *, limit_seconds: float, poll: float = 0.5) -> dict[str, Any]:
    """Poll ``/admin/stats`` until no reply runs and none waits; return the last stats.

    The result also holds ``idle`` (false when ``limit_seconds`` ran out first) and
    ``peak``: the most replies running, generations queued and stream subscribers seen.
    """
    deadline = time.monotonic() + limit_seconds
    peak = {"running_replies": 0, "queued": 0, "subscribers": 0}
    async with session(2) as client:
        while True:
            stats: dict[str, Any] = await get_json(client, f"{url}/admin/stats")
            generations = stats["generations"]
            for key, value in (
                ("running_replies", generations["running_replies"]),
                ("queued", generations["queued"]),
                ("subscribers", stats["streams"]["subscribers"]),
            ):
                peak[key] = max(peak[key], value)
            idle = (
                generations["running_replies"] == 0
                and generations["inflight"] == 0
                and generations["queued"] == 0
            )
            if idle or time.monotonic() >= deadline:
                return {**stats, "idle": idle, "peak": peak}
            await asyncio.sleep(poll)


@dataclass
class CommitCheck:
    """What storage holds for a set of conversations after their replies ended."""

    checked: int = 0
    message_counts: Counter[int] = field(default_factory=Counter)
    reply_statuses: Counter[str] = field(default_factory=Counter)
    wrong_content: int = 0

    def as_dict(self) -> dict[str, Any]:
        """A JSON-able view."""
        return {
            "checked": self.checked,
            "message_counts": {str(k): v for k, v in sorted(self.message_counts.items())},
            "reply_statuses": dict(self.reply_statuses),
            "wrong_content": self.wrong_content,
        }


async def check_commits(
    url: str,
    ids: Sequence[str],
    expected_reply: str | None,
    *,
    concurrency: int = 16,
) -> CommitCheck:
    """Read each conversation and its history: message count, reply status and text."""
    check = CommitCheck()
    async with session(concurrency) as client:

        async def one(conversation_id: str) -> None:
            base = f"{url}/api/conversations/{conversation_id}"
            info = await get_json(client, base)
            check.checked += 1
            check.message_counts[int(info["message_count"])] += 1
            if info["message_count"] == 0:
                return
            history = await get_json(client, f"{base}/messages")
            reply = history["items"][-1]
            status = reply["status"] if reply["role"] == "assistant" else "no reply"
            check.reply_statuses[status] += 1
            if expected_reply is not None and reply["content"] != expected_reply:
                check.wrong_content += 1

        await run_bounded(ids, one, concurrency=concurrency, deadline=time.monotonic() + 600)
    return check


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) of ``values`` by nearest rank, or ``None`` when empty."""
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def dumps(value: Any) -> str:
    """Compact JSON, for request bodies written by hand on raw sockets."""
    return json.dumps(value, separators=(",", ":"))
