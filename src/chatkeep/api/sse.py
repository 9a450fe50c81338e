"""Server-sent events for reply streams (keep-alive pings, ``retry:``, send timeout)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
from sse_starlette import EventSourceResponse, ServerSentEvent

from chatkeep.settings import Settings
from chatkeep.streaming.reply_stream import (
    ReplyStream,
    SlowConsumer,
    StreamEvent,
    TooManySubscribers,
)

#: Milliseconds a browser's EventSource waits before reconnecting.
RETRY_MS = 2000


def sse_response(events: AsyncIterator[StreamEvent], settings: Settings) -> EventSourceResponse:
    """An SSE response that relays ``events``."""

    async def encoded() -> AsyncIterator[ServerSentEvent]:
        first = True
        async for item in events:
            yield ServerSentEvent(
                data=item.data.decode(),
                event=item.event,
                id=item.id,
                retry=RETRY_MS if first else None,
            )
            first = False

    return EventSourceResponse(
        encoded(),
        ping=settings.sse_ping_seconds,
        send_timeout=settings.sse_send_timeout_seconds,
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def stream_events(
    stream: ReplyStream, *, after: int, max_lag_bytes: int, max_subscribers: int
) -> AsyncIterator[StreamEvent]:
    """A subscriber's events; a reader too far behind gets an ``error`` event and is cut off."""
    try:
        async for event in stream.subscribe(
            after=after, max_lag_bytes=max_lag_bytes, max_subscribers=max_subscribers
        ):
            yield event
    except SlowConsumer as exc:
        payload = {"error": {"code": "slow_consumer", "message": str(exc)}}
        yield StreamEvent("error", orjson.dumps(payload), exc.last_event_id)
    except TooManySubscribers as exc:
        payload = {"error": {"code": "too_many_subscribers", "message": str(exc)}}
        yield StreamEvent("error", orjson.dumps(payload), stream.event_id(max(after, 0)))


async def replayed_events(
    reply_id: str, events: list[tuple[str, bytes]], first_index: int = 0
) -> AsyncIterator[StreamEvent]:
    """Events of a reply that is already committed, numbered like a live stream's."""
    for index, (event, data) in enumerate(events, start=first_index):
        yield StreamEvent(event, data, f"{reply_id}:{index}")
