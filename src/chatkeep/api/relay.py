"""A streamed response whose clean-up always runs.

Starlette's `StreamingResponse` leaves its body iterator unstarted when the client
is gone before the first byte, and an unstarted async generator never runs its
``finally``. A relayed backend response and an admission slot must be released
whatever happens, so this response owns its clean-up.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import orjson
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from chatkeep.api.disconnect import until_disconnected
from chatkeep.api.errors import error_response
from chatkeep.service.pipeline import Stoppable, backend_done

#: What a relayed stream of server-sent events ends with when the server stops under it:
#: an error event, as OpenAI's own streams report a failure (its clients raise it).
SHUTDOWN_MESSAGE = "the server shut down before the answer was complete; retry"
SHUTDOWN_EVENT = (
    b"data: " + orjson.dumps({"error": {"code": "shutdown", "message": SHUTDOWN_MESSAGE}}) + b"\n\n"
)


class RelayResponse(Response):
    """Sends ``chunks`` as they come; runs ``on_close`` exactly once at the end."""

    def __init__(
        self,
        chunks: AsyncIterator[bytes],
        *,
        status_code: int = 200,
        media_type: str,
        on_close: Callable[[], Awaitable[None]],
        stoppable: Stoppable | None = None,
    ) -> None:
        # Not Response.__init__: given no body it would declare "content-length: 0".
        self.status_code = status_code
        self.media_type = media_type
        self.background = None
        self.init_headers()
        self.chunks = chunks
        self._on_close = on_close
        self._closed = False
        self._stoppable = stoppable or Stoppable()
        self._started = False

    async def close(self) -> None:
        """Stop the iterator and release what it holds. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            aclose = getattr(self.chunks, "aclose", None)
            if aclose is not None:
                await aclose()
        finally:
            await self._on_close()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        with self._stoppable.guard() as stopped:
            try:
                # A client that leaves stops the relay: its backend request and its
                # admission slot are given back now, not when the backend would have ended.
                await until_disconnected(self._relay(send), receive)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not stopped() or task is None or task.uncancel() > 0:
                    raise
                await self._end_for_shutdown(scope, receive, send)
            except OSError:
                pass  # the client went away; nothing more to send
            finally:
                await self.close()

    async def _end_for_shutdown(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The server stopped under this answer: end it in a way the client can read."""
        if not self._started:
            response = error_response(503, "shutdown", SHUTDOWN_MESSAGE)
            await response(scope, receive, send)
            return
        sse = (self.media_type or "").startswith("text/event-stream")
        last = SHUTDOWN_EVENT if sse else b""
        await send({"type": "http.response.body", "body": last, "more_body": False})

    async def _relay(self, send: Send) -> None:
        self._started = True
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        async for chunk in self.chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        backend_done()
        await send({"type": "http.response.body", "body": b"", "more_body": False})
