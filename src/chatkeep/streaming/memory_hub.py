"""The in-process reply hub: running reply streams, and finished ones kept for resuming.

A finished stream is kept for ``retention_seconds`` so a client that lost its
connection near the end can resume from its ``Last-Event-ID``; at most
``max_retained`` finished streams are kept, oldest dropped first. Running
streams are bounded by admission control, so the whole registry is bounded.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from chatkeep.streaming.hub import ReplyHub, ReplyPublisher
from chatkeep.streaming.reply_stream import ReplyStream


class MemoryReplyHub(ReplyHub):
    """Current reply stream per conversation, in this process.

    ``max_bytes`` bounds the text of one reply (a longer one is cut and stored
    incomplete); running replies are bounded in number by admission control.
    """

    def __init__(
        self,
        *,
        retention_seconds: float,
        max_retained: int,
        max_bytes: int,
        clock: Callable[[], float],
    ) -> None:
        self.retention_seconds = retention_seconds
        self.max_retained = max_retained
        self.max_bytes = max_bytes
        self._clock = clock
        self._running: dict[str, ReplyStream] = {}
        self._finished: OrderedDict[str, ReplyStream] = OrderedDict()

    def open(
        self, *, reply_id: str, conversation_id: str, owner_id: str, message_event: bytes
    ) -> ReplyStream:
        stream = ReplyStream(
            reply_id=reply_id,
            conversation_id=conversation_id,
            owner_id=owner_id,
            message_event=message_event,
            max_bytes=self.max_bytes,
            clock=self._clock,
        )
        self.add(stream)
        return stream

    def add(self, stream: ReplyStream) -> None:
        """Register a new running stream for its conversation."""
        self._finished.pop(stream.conversation_id, None)
        self._running[stream.conversation_id] = stream

    def close(self, reply: ReplyPublisher) -> None:
        assert isinstance(reply, ReplyStream)
        self.mark_finished(reply)

    def mark_finished(self, stream: ReplyStream) -> None:
        """Move a stream to the retained set once its final event is out."""
        if self._running.get(stream.conversation_id) is stream:
            del self._running[stream.conversation_id]
        self._finished[stream.conversation_id] = stream
        self._finished.move_to_end(stream.conversation_id)
        self.reap()

    def find(self, owner_id: str, conversation_id: str) -> ReplyStream | None:
        """The running or recently finished stream of a conversation, if any."""
        stream = self._running.get(conversation_id) or self._finished.get(conversation_id)
        if stream is None or stream.owner_id != owner_id:
            return None
        if stream.finished and self._expired(stream):
            return None
        return stream

    def discard(self, conversation_id: str) -> None:
        """Forget a conversation's finished stream (it was deleted)."""
        self._finished.pop(conversation_id, None)

    def _expired(self, stream: ReplyStream) -> bool:
        finished_at = stream.finished_at
        return finished_at is not None and self._clock() - finished_at > self.retention_seconds

    def reap(self) -> int:
        """Drop expired finished streams and any over the count bound; return how many."""
        dropped = 0
        while self._finished:
            oldest = next(iter(self._finished.values()))
            if len(self._finished) > self.max_retained or self._expired(oldest):
                self._finished.popitem(last=False)
                dropped += 1
            else:
                break
        return dropped

    async def reap_forever(
        self, interval: float, sleep: Callable[[float], Awaitable[object]] = asyncio.sleep
    ) -> None:
        """Reap expired streams every ``interval`` seconds, so idle ones go even without traffic."""
        while True:
            await sleep(interval)
            self.reap()

    @property
    def running(self) -> list[ReplyStream]:
        return list(self._running.values())

    # -- the governor's Reclaimable interface -------------------------------------------

    @property
    def name(self) -> str:
        return "reply_streams"

    def nbytes(self) -> int:
        """Reply text held by running and retained streams."""
        return sum(s.nbytes for s in self._running.values()) + sum(
            s.nbytes for s in self._finished.values()
        )

    def reclaim(self, fraction: float) -> int:
        """Drop retained (finished) streams, oldest first, until ``fraction`` is freed.

        Running streams are never dropped: their text is the reply being generated.
        Expired ones go first, then the oldest.
        """
        target = fraction * self.nbytes()
        freed = 0
        for conversation_id, stream in list(self._finished.items()):
            if freed >= target and not self._expired(stream):
                break
            freed += stream.nbytes
            del self._finished[conversation_id]
        return freed

    def counts(self) -> dict[str, int]:
        """Open streams, retained streams and subscribers, for stats and metrics."""
        streams = [*self._running.values(), *self._finished.values()]
        return {
            "running": len(self._running),
            "retained": len(self._finished),
            "subscribers": sum(s.subscribers for s in streams),
            "bytes": sum(s.nbytes for s in streams),
        }
