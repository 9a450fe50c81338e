"""A realistic chat workload for the leak benchmark: sends on the durable path, and reads.

A fixed pool of conversations is shared out among the workers, so no two workers ever
send to the same conversation at once (which the server would answer ``409``). Each
request is picked from a fixed 20-step pattern:

* 14 of 20 (70 %): ``POST /api/conversations/{id}/messages``, a JSON reply from ``echo``
  (user message and reply each committed to SQLite before the answer);
* 3 of 20 (15 %): ``GET /api/conversations/{id}/messages?limit=20`` (a history page);
* 2 of 20 (10 %): ``GET /api/conversations/{id}``;
* 1 of 20 (5 %): ``GET /api/conversations?limit=20``.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import aiohttp

#: The request kinds, in the order of the 20-step pattern.
PATTERN: tuple[str, ...] = ("send",) * 14 + ("history",) * 3 + ("info",) * 2 + ("list",)

#: Words the messages are made of; each message is about 40 words (~250 characters).
_SENTENCE = (
    "please summarise the meeting notes from tuesday and list the open actions for the "
    "team with owners and due dates so that we can review progress on friday morning"
)
_WORDS = _SENTENCE.split()

OnRequest = Callable[[int], Awaitable[None]]


def message_text(index: int) -> str:
    """A ~40-word user message that differs from one index to the next."""
    start = index % len(_WORDS)
    words = [_WORDS[(start + n) % len(_WORDS)] for n in range(40)]
    return f"({index}) " + " ".join(words)


@dataclass
class DriveResult:
    """What one `ChatWorkload.drive` call did."""

    requests: int = 0
    seconds: float = 0.0
    statuses: Counter[str] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)

    @property
    def per_second(self) -> float:
        """Requests completed per second of wall time."""
        return self.requests / self.seconds if self.seconds else 0.0


class ChatWorkload:
    """Drives the mixed workload against one server over a shared client session."""

    def __init__(
        self,
        client: aiohttp.ClientSession,
        url: str,
        conversation_ids: Sequence[str],
        concurrency: int = 8,
    ) -> None:
        if len(conversation_ids) < concurrency:
            raise ValueError("need at least one conversation per worker")
        self.client = client
        self.url = url
        self.concurrency = concurrency
        self._pools = [list(conversation_ids[w::concurrency]) for w in range(concurrency)]
        self._issued = 0

    async def _request(self, kind: str, conversation_id: str, index: int) -> str:
        base = f"{self.url}/api/conversations"
        if kind == "send":
            call = self.client.post(
                f"{base}/{conversation_id}/messages", json={"content": message_text(index)}
            )
        elif kind == "history":
            call = self.client.get(f"{base}/{conversation_id}/messages", params={"limit": 20})
        elif kind == "info":
            call = self.client.get(f"{base}/{conversation_id}")
        else:
            call = self.client.get(base, params={"limit": 20})
        try:
            async with call as response:
                await response.read()
                return str(response.status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return type(exc).__name__

    async def drive(
        self,
        *,
        requests: int,
        seconds: float,
        on_request: OnRequest | None = None,
    ) -> DriveResult:
        """Run until ``requests`` more requests completed or ``seconds`` passed.

        ``on_request(n)`` is awaited after each completed request with the number of
        requests this call has completed so far.
        """
        result = DriveResult()
        began = time.monotonic()
        deadline = began + seconds
        target = self._issued + requests

        async def worker(number: int) -> None:
            pool = self._pools[number]
            turn = 0
            while self._issued < target and time.monotonic() < deadline:
                index = self._issued
                self._issued += 1
                kind = PATTERN[index % len(PATTERN)]
                status = await self._request(kind, pool[turn % len(pool)], index)
                turn += 1
                result.requests += 1
                result.statuses[status] += 1
                result.kinds[kind] += 1
                if on_request is not None:
                    await on_request(result.requests)

        await asyncio.gather(*(worker(n) for n in range(self.concurrency)))
        result.seconds = time.monotonic() - began
        return result
