"""The auth seam: who a request acts for, decided once, before any route runs.

Every route reads the owner from ``scope["chatkeep.owner"]`` and scopes every store call
by it. Today each request acts for the one configured owner; API keys mapped to owners
will be resolved here (and a request without a valid key refused here), so no route has
to know how an owner was found.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

#: The scope key holding the owner id of a request.
OWNER_SCOPE_KEY = "chatkeep.owner"


class OwnerMiddleware:
    """``OwnerMiddleware(app, default_owner=...)``; passes non-HTTP scopes through."""

    def __init__(self, app: ASGIApp, *, default_owner: str) -> None:
        self.app = app
        self.default_owner = default_owner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            # Always overwritten: an owner is never taken from whoever built the scope.
            scope[OWNER_SCOPE_KEY] = self.default_owner
        await self.app(scope, receive, send)
