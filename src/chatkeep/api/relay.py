"""A streamed response whose clean-up always runs.

Starlette's `StreamingResponse` leaves its body iterator unstarted when the client
is gone before the first byte, and an unstarted async generator never runs its
``finally``. A relayed backend response and an admission slot must be released
whatever happens, so this response owns its clean-up.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from chatkeep.api.disconnect import until_disconnected


class RelayResponse(Response):
    """Sends ``chunks`` as they come; runs ``on_close`` exactly once at the end."""

    def __init__(
        self,
        chunks: AsyncIterator[bytes],
        *,
        status_code: int = 200,
        media_type: str,
        on_close: Callable[[], Awaitable[None]],
    ) -> None:
        # Not Response.__init__: given no body it would declare "content-length: 0".
        self.status_code = status_code
        self.media_type = media_type
        self.background = None
        self.init_headers()
        self.chunks = chunks
        self._on_close = on_close
        self._closed = False

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
        try:
            # A client that leaves stops the relay: its backend request and its admission
            # slot are given back now, not when the backend would have finished.
            await until_disconnected(self._relay(send), receive)
        except OSError:
            pass  # the client went away; nothing more to send
        finally:
            await self.close()

    async def _relay(self, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        async for chunk in self.chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
