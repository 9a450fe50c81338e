"""One reply being generated, and the clients reading it.

A `ReplyStream` is written by the task that talks to the model and read by any
number of subscribers (SSE clients), each at its own pace. Subscribers don't
get a queue of their own: each holds a position in the stream's event log and
receives everything it missed as one coalesced ``delta``, so a slow reader costs
no memory. A reader further behind than ``max_lag_bytes`` is cut off with an
``error`` event (it can resume with ``Last-Event-ID``); a reader is never
silently skipped ahead.

Events are numbered: 0 is ``message`` (the committed user message), 1…n are
``delta`` pieces, n+1 is ``done`` or ``error``. The SSE id of event k is
``"<reply id>:<k>"``. The final event is made from the reply's `ReplyOutcome` by
`final_event`, the same function that answers a replayed reply.
"""

from __future__ import annotations

import asyncio
import contextlib
from array import array
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from chatkeep.domain.outcome import ReplyOutcome
from chatkeep.domain.records import Message
from chatkeep.errors import ShuttingDown
from chatkeep.serialize import message_dict

#: Bytes one piece costs while a reply runs: a str object and its list slot.
PIECE_OVERHEAD = 64
#: Bytes of a stream beyond its text: the object, its events, the final payload's record.
#: Measured (bench/sizing_calibration.py, finished echo replies of 20 to 2000 characters):
#: a retained stream frees 2.4 to 2.9 KB besides its text; 2048 reported 0.88-0.95 of it.
STREAM_OVERHEAD = 2400


@dataclass(slots=True, frozen=True)
class StreamEvent:
    """One server-sent event: name, JSON payload and its SSE id."""

    event: str
    data: bytes
    id: str
    #: Milliseconds the client should wait before it reconnects, when the event says so.
    retry_ms: int | None = None
    #: True for the last event of a stream (``done`` or ``error``): nothing follows it.
    final: bool = False


#: How long a client cut off by a server stop waits before it reconnects (to this
#: instance once it is back, or to another behind the same load balancer).
SHUTDOWN_RETRY_MS = 5000

#: Yielded by `ReplyStream.subscribe` when nothing happened for ``ping_seconds``: the
#: reader sends a keep-alive comment, so proxies keep the connection open.
PING = StreamEvent("", b"", "")


def final_event(outcome: ReplyOutcome) -> tuple[str, dict[str, Any]]:
    """The last event of a reply stream: ``done`` with the message, or ``error``.

    An ``error`` carries the committed (incomplete) message when there is one.
    """
    if outcome.complete:
        assert outcome.message is not None
        return "done", message_dict(outcome.message)
    payload = outcome.error_body()
    if outcome.message is not None:
        payload["message"] = message_dict(outcome.message)
    return "error", payload


def committed_events(user_message: Message, outcome: ReplyOutcome) -> list[tuple[str, bytes]]:
    """The events of a reply that is already committed, as a live stream would have sent."""
    events = [("message", orjson.dumps(message_dict(user_message)))]
    if outcome.message is not None and outcome.message.content:
        events.append(("delta", orjson.dumps({"text": outcome.message.content})))
    event, payload = final_event(outcome)
    events.append((event, orjson.dumps(payload)))
    return events


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class TooManySubscribers(Exception):
    """The stream already has as many readers as it allows."""


class ReplyTooLong(Exception):
    """The reply grew past the stream's ``max_bytes``."""


class SlowConsumer(Exception):
    """A subscriber fell further behind than the stream allows."""

    def __init__(self, message: str, last_event_id: str) -> None:
        super().__init__(message)
        self.last_event_id = last_event_id


class ReplyStream:
    """The event log of one reply; its text is bounded by ``max_bytes`` (UTF-8)."""

    def __init__(
        self,
        *,
        reply_id: str,
        conversation_id: str,
        owner_id: str,
        message_event: bytes,
        max_bytes: int,
        clock: Callable[[], float],
    ) -> None:
        self.reply_id = reply_id
        self.conversation_id = conversation_id
        self.owner_id = owner_id
        self._message_event = message_event
        self._max_bytes = max_bytes
        self._clock = clock
        # While running, _parts[k] is the text of delta k. Sealed, the parts are joined
        # into _text once (shared with the committed message) and dropped.
        # _ends[k] / _char_ends[k]: UTF-8 bytes / characters through delta k.
        self._parts: list[str] = [""]
        self._text: str | None = None
        self._ends = array("q", [0])
        self._char_ends = array("q", [0])
        self._final: tuple[str, Any] | None = None
        # Futures of readers waiting for the next event, and of callers waiting for the
        # end: made by whoever waits, so a piece that nobody waits for costs no future.
        self._waiters: list[asyncio.Future[None]] = []
        self._end_waiters: list[asyncio.Future[None]] = []
        self.subscribers = 0
        self.started_at = self.last_activity = clock()
        self.finished_at: float | None = None
        #: How the reply ended; set once, by `finish`.
        self.outcome: ReplyOutcome | None = None

    @property
    def text(self) -> str:
        """Everything generated so far."""
        return self._text if self._text is not None else "".join(self._parts)

    def seal(self) -> str:
        """End the text: join it once, keep that one string, and return it.

        The caller commits this very string, so the retained stream and the committed
        message share it instead of holding two copies.
        """
        if self._text is None:
            self._text = "".join(self._parts)
            self._parts = []
        return self._text

    @property
    def text_bytes(self) -> int:
        """UTF-8 bytes of the reply text so far (what the buffer bound counts)."""
        return self._ends[-1]

    @property
    def nbytes(self) -> int:
        """Estimated bytes the stream holds: its text, per-piece bookkeeping, the rest."""
        return (
            self._ends[-1]
            + PIECE_OVERHEAD * len(self._parts)
            + 16 * len(self._ends)
            + (STREAM_OVERHEAD)
        )

    @property
    def finished(self) -> bool:
        return self._final is not None

    def publish(self, piece: str) -> None:
        """Publish a piece of the reply."""
        if self._final is not None or self._text is not None:
            raise RuntimeError("stream already finished")
        if not piece:
            return
        # isascii() is a flag lookup: most pieces need no encoding to be measured.
        end = self._ends[-1] + (len(piece) if piece.isascii() else len(piece.encode()))
        if end > self._max_bytes:
            raise ReplyTooLong(
                f"reply exceeded the stream buffer of {self._max_bytes} bytes and was cut"
            )
        self._parts.append(piece)
        self._ends.append(end)
        self._char_ends.append(self._char_ends[-1] + len(piece))
        self.last_activity = self._clock()
        self._notify()

    def finish(self, outcome: ReplyOutcome) -> None:
        """Publish the final event (``done`` or ``error``); later calls are ignored."""
        if self._final is not None:
            return
        self.seal()
        # Kept as given and encoded per reader: resuming after the end is rare, and the
        # payload shares its text with the committed message.
        self._final = final_event(outcome)
        self.outcome = outcome
        self.finished_at = self._clock()
        self._notify()
        waiters, self._end_waiters = self._end_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def wait(self, within: float | None = None) -> ReplyOutcome | None:
        """Wait at most ``within`` seconds for the end; the outcome, or None if not yet.

        One future, woken by `finish` alone (not by every piece), and one timer.
        """
        if self.outcome is not None:
            return self.outcome
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._end_waiters.append(waiter)
        timer = None if within is None else loop.call_later(within, _wake, waiter)
        try:
            await waiter
        finally:
            if timer is not None:
                timer.cancel()
            if self.outcome is None:
                self._end_waiters.remove(waiter)
        return self.outcome

    def _is_shutdown(self) -> bool:
        return self.outcome is not None and self.outcome.code == ShuttingDown.code

    def _notify(self) -> None:
        if self._waiters:
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    async def _changed(self) -> None:
        """Until the next `publish` or `finish`."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            if not waiter.done() or waiter.cancelled():
                with contextlib.suppress(ValueError):  # already taken by _notify
                    self._waiters.remove(waiter)

    def _slice(self, after: int, through: int) -> str:
        """The text of deltas ``after + 1`` … ``through``."""
        if self._text is None:
            return "".join(self._parts[after + 1 : through + 1])
        return self._text[self._char_ends[after] : self._char_ends[through]]

    def event_id(self, index: int) -> str:
        return f"{self.reply_id}:{index}"

    def position_of(self, last_event_id: str | None) -> int:
        """The index after which a subscriber with ``Last-Event-ID`` resumes (-1: start)."""
        if not last_event_id:
            return -1
        reply_id, _, index = last_event_id.rpartition(":")
        # isdecimal() alone takes other scripts' digits, which int() may not read.
        if (
            reply_id != self.reply_id
            or not (index.isascii() and index.isdecimal())
            or len(index) > 18  # past any event of a bounded stream (and int()'s limit)
        ):
            return -1
        return min(int(index), len(self._ends))

    async def subscribe(
        self,
        *,
        after: int = -1,
        max_lag_bytes: int | None = None,
        max_subscribers: int | None = None,
        ping_seconds: float | None = None,
    ) -> AsyncIterator[StreamEvent]:
        """Yield the events after index ``after``, live, until the final one.

        With ``ping_seconds``, `PING` is yielded whenever that long passed without an
        event. Raises `TooManySubscribers` when ``max_subscribers`` readers are already on.
        """
        if max_subscribers is not None and self.subscribers >= max_subscribers:
            raise TooManySubscribers(
                f"this reply already has {self.subscribers} readers (limit {max_subscribers})"
            )
        self.subscribers += 1
        try:
            position = after
            if position < 0:
                yield StreamEvent("message", self._message_event, self.event_id(0))
                position = 0
            while True:
                head = len(self._ends) - 1
                if position < head:
                    lag = self._ends[head] - self._ends[position]
                    if max_lag_bytes is not None and lag > max_lag_bytes:
                        raise SlowConsumer(
                            f"subscriber fell {lag} bytes behind (limit {max_lag_bytes}); "
                            f"resume with Last-Event-ID {self.event_id(position)}",
                            self.event_id(position),
                        )
                    text = self._slice(position, head)
                    position = head
                    yield StreamEvent("delta", orjson.dumps({"text": text}), self.event_id(head))
                    continue
                if self._final is not None:
                    event, payload = self._final
                    retry = SHUTDOWN_RETRY_MS if self._is_shutdown() else None
                    yield StreamEvent(
                        event,
                        orjson.dumps(payload),
                        self.event_id(head + 1),
                        retry_ms=retry,
                        final=True,
                    )
                    return
                if ping_seconds is None:
                    await self._changed()
                    continue
                try:
                    async with asyncio.timeout(ping_seconds):
                        await self._changed()
                except TimeoutError:
                    yield PING
        finally:
            self.subscribers -= 1
