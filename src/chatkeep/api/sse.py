"""Server-sent events: the wire encoding of reply streams, and the response that sends them.

`EventStreamResponse` is a plain ASGI response rather than sse-starlette's: per response
that one runs a task group, a keep-alive task, a disconnect watcher and a shutdown
watcher that cuts every stream the moment the server is asked to stop, without a final
event. Here the keep-alive comes from the stream itself (`PING` when idle), one task
watches for the client going away, each send is bounded in time, and a stream always ends
with its own final event (``done`` or ``error``): on shutdown that is an ``error`` with
code ``shutdown`` once the grace period is over.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from chatkeep.api.disconnect import until_disconnected
from chatkeep.streaming.hub import ReplySource
from chatkeep.streaming.reply_stream import (
    PING,
    SlowConsumer,
    StreamEvent,
    TooManySubscribers,
)

#: Milliseconds a browser's EventSource waits before reconnecting.
RETRY_MS = 2000

_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-store"),
    # nginx buffers proxied answers unless told not to; a stream must flow as it comes.
    (b"x-accel-buffering", b"no"),
]


def encode_event(event: StreamEvent, *, retry_ms: int | None = None) -> bytes:
    """One event in SSE framing; ``data`` is one line of JSON, so it needs no splitting."""
    if event is PING:
        return b": ping\n\n"
    retry_ms = event.retry_ms if event.retry_ms is not None else retry_ms
    head = b"retry: %d\n" % retry_ms if retry_ms is not None else b""
    return b"%sid: %s\nevent: %s\ndata: %s\n\n" % (
        head,
        event.id.encode(),
        event.event.encode(),
        event.data,
    )


class EventStreamResponse(Response):
    """Sends ``events`` as SSE; the first carries ``retry:``, idle time carries pings.

    A send that takes longer than ``send_timeout`` (a client that stopped reading) ends
    the response; so does the client going away. Either way the events' iterator is
    closed, which lets go of its place in the reply stream.
    """

    media_type = "text/event-stream"

    def __init__(self, events: AsyncIterator[StreamEvent], *, send_timeout: float) -> None:
        # Not Response.__init__: it would render a body and declare its length.
        self.status_code = 200
        self.background = None
        self.raw_headers = list(_HEADERS)
        self.events = events
        self.send_timeout = send_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await until_disconnected(self._send_all(send), receive)
        except (TimeoutError, OSError):
            pass  # the client stopped reading or went away: nothing more to send
        finally:
            aclose = getattr(self.events, "aclose", None)
            if aclose is not None:
                await aclose()

    async def _send_all(self, send: Send) -> None:
        async with asyncio.timeout(self.send_timeout) as deadline:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            loop = asyncio.get_running_loop()
            retry: int | None = RETRY_MS
            deadline.reschedule(None)
            async for event in self.events:
                body = encode_event(event, retry_ms=retry)
                retry = None
                deadline.reschedule(loop.time() + self.send_timeout)
                # The last event ends the body in the same write (one send less a stream).
                more = not event.final
                await send({"type": "http.response.body", "body": body, "more_body": more})
                if not more:
                    return
                deadline.reschedule(None)
            deadline.reschedule(loop.time() + self.send_timeout)
            await send({"type": "http.response.body", "body": b"", "more_body": False})


async def stream_events(
    stream: ReplySource,
    *,
    after: int,
    max_lag_bytes: int,
    max_subscribers: int,
    ping_seconds: float,
) -> AsyncIterator[StreamEvent]:
    """A subscriber's events; a reader too far behind gets an ``error`` event and is cut off."""
    try:
        async for event in stream.subscribe(
            after=after,
            max_lag_bytes=max_lag_bytes,
            max_subscribers=max_subscribers,
            ping_seconds=ping_seconds,
        ):
            yield event
    except SlowConsumer as exc:
        payload = {"error": {"code": "slow_consumer", "message": str(exc)}}
        yield StreamEvent("error", orjson.dumps(payload), exc.last_event_id, final=True)
    except TooManySubscribers as exc:
        payload = {"error": {"code": "too_many_subscribers", "message": str(exc)}}
        last_id = f"{stream.reply_id}:{max(after, 0)}"
        yield StreamEvent("error", orjson.dumps(payload), last_id, final=True)


async def replayed_events(
    reply_id: str, events: list[tuple[str, bytes]], first_index: int = 0
) -> AsyncIterator[StreamEvent]:
    """Events of a reply that is already committed, numbered like a live stream's."""
    last = first_index + len(events) - 1
    for index, (event, data) in enumerate(events, start=first_index):
        yield StreamEvent(event, data, f"{reply_id}:{index}", final=index == last)
