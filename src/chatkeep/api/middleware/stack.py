"""FastAPI as the innermost app of one explicit middleware stack.

Starlette builds its middleware stack around its own router, and FastAPI's
``add_middleware`` inserts there: around FastAPI alone, where the hot routes (which are
answered before FastAPI) would never see it. `StackedFastAPI` turns that inside out: its
``layers`` wrap the whole application, hot routes included, and ``add_middleware``
refuses with a pointer to them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send


def build_stack(app: ASGIApp, layers: Sequence[Middleware]) -> ASGIApp:
    """``app`` wrapped in ``layers``, the first of them outermost."""
    for cls, args, kwargs in reversed(layers):
        app = cls(app, *args, **kwargs)
    return app


class StackedFastAPI(FastAPI):
    """A FastAPI app whose every request goes through ``layers`` first.

    ``layers`` (outermost first) are `Middleware` specs, each a plain ASGI class
    ``cls(app, **options)``; the stack is built from them at the first call, as Starlette
    builds its own, so they may be set once the routes they refer to exist. FastAPI's own
    machinery (exception handlers, routing) runs inside, for the routes it serves.
    """

    def __init__(self, *, layers: Sequence[Middleware] = (), **options: Any) -> None:
        super().__init__(**options)
        self.layers: list[Middleware] = list(layers)
        self._stack: ASGIApp | None = None

    def add_middleware(self, *args: Any, **kwargs: Any) -> None:
        """Refused: a middleware added here would wrap FastAPI alone, not the hot routes."""
        raise RuntimeError(
            "chatkeep's middleware stack is explicit: add a layer to `layers` in create_app()"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Set first, as Starlette does, so every layer (and a hot route) reaches the app.
        scope["app"] = self
        if self._stack is None:
            self._stack = build_stack(self._fastapi, self.layers)
        if scope["type"] == "lifespan":
            send = self._told_plainly(send)
        await self._stack(scope, receive, send)

    def _told_plainly(self, send: Send) -> Send:
        """``send`` with a startup refused on purpose reported by its message alone.

        Starlette reports any startup failure with its traceback; when the lifespan put a
        ``startup_error`` in the app's state (a locked or damaged data directory), that
        sentence is what the server logs instead.
        """

        async def plain(message: Message) -> None:
            error = getattr(self.state, "startup_error", None)
            if message["type"] == "lifespan.startup.failed" and error:
                message = {**message, "message": f"chatkeep cannot start: {error}"}
            await send(message)

        return plain

    async def _fastapi(self, scope: Scope, receive: Receive, send: Send) -> None:
        await super().__call__(scope, receive, send)
