"""The quota layer of the middleware stack: a key's request rate and its open replies.

It sits after the auth layer, which put the request's `ApiKey` in
``scope["chatkeep.key"]``; a request without one (``auth=none``, the admin token, a public
path) passes through untouched. For a request with a key:

1. the key's rate (`KeyRateLimiter`): over it, ``429`` with ``Retry-After``;
2. on a route that opens a reply (``stream_routes``: the sends, the chat completions, a
   stream resumed), the key's open replies (`OpenStreams`): one more than ``max_streams``
   is ``429``. The slot is a `StreamLease` put in the scope (`LEASE_SCOPE_KEY`), held
   by the ASGI call, streamed body included, until the call ends however it ends
   (finished, client gone, or an error). A durable send's reply holds it too, for as
   long as it is generating (`chatkeep.service.replies`): a client that leaves does not
   give the slot back while its reply goes on. A stream resumed is one more HTTP call and
   takes a slot of its own, even while the reply it reads holds one.

A key made by a key is held to its own limits and to its family's budget (its root's
limits, shared by every key of the family): both limiters count it twice, and a refusal
names both.

Refusals are the app's JSON error shape (``rate_limited``), answered before any route
runs; the limiters count them for ``/metrics`` (by reason, never by key).
"""

from __future__ import annotations

from collections.abc import Sequence
from re import Pattern

from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from chatkeep.api.errors import chatkeep_error_response
from chatkeep.api.middleware.auth import KEY_SCOPE_KEY
from chatkeep.domain.keys import ApiKey, number_text
from chatkeep.errors import RateLimited
from chatkeep.quotas.lease import LEASE_SCOPE_KEY, StreamLease
from chatkeep.quotas.rate import KeyRateLimiter
from chatkeep.quotas.streams import OpenStreams

#: The routes that open a reply, as (method, path template): the ones `stream_routes` takes.
STREAM_ROUTES = (
    ("POST", "/v1/chat/completions"),
    ("POST", "/api/conversations/{conversation_id}/messages"),
    ("GET", "/api/conversations/{conversation_id}/stream"),
)

#: A key at its open replies' limit is told to retry after this long: nothing says when
#: one of them ends, and a second is what a client polls at anyway.
STREAMS_RETRY_AFTER = 1.0


class QuotaMiddleware:
    """``QuotaMiddleware(app, rate=..., streams=..., stream_routes=[...])``.

    ``stream_routes`` are the registered routes that open a reply (see `STREAM_ROUTES`),
    matched by method and path pattern. Non-HTTP scopes and requests without a key pass
    through.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        rate: KeyRateLimiter,
        streams: OpenStreams,
        stream_routes: Sequence[Route],
    ) -> None:
        self.app = app
        self.rate = rate
        self.streams = streams
        self._streaming: tuple[tuple[frozenset[str], Pattern[str]], ...] = tuple(
            (frozenset(route.methods or ()), route.path_regex) for route in stream_routes
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        key: ApiKey | None = scope.get(KEY_SCOPE_KEY) if scope["type"] == "http" else None
        if key is None:
            await self.app(scope, receive, send)
            return
        wait = self.rate.hit(key)
        if wait is not None:
            refusal = RateLimited(rate_refusal(key), wait)
            await chatkeep_error_response(refusal)(scope, receive, send)
            return
        if not self._opens_a_reply(scope):
            await self.app(scope, receive, send)
            return
        lease = StreamLease.take(self.streams, key)
        if lease is None:
            refusal = RateLimited(streams_refusal(key), STREAMS_RETRY_AFTER)
            await chatkeep_error_response(refusal)(scope, receive, send)
            return
        scope[LEASE_SCOPE_KEY] = lease
        try:
            await self.app(scope, receive, send)
        finally:
            lease.release()

    def _opens_a_reply(self, scope: Scope) -> bool:
        method, path = scope["method"], scope["path"]
        for methods, regex in self._streaming:
            if method in methods and regex.match(path) is not None:
                return True
        return False


def rate_refusal(key: ApiKey) -> str:
    """Why ``key`` is over its rate: its limits, and its family's when it has one."""
    limits, budget = key.limits, key.family_budget
    rate = number_text(limits.rate)
    own = f"this key may make {rate} requests a second (bursts of {limits.burst})"
    if budget is None:
        return f"{own}; retry later"
    return (
        f"{own}, and its family of keys {number_text(budget.rate)} together "
        f"(bursts of {budget.burst}); retry later"
    )


def streams_refusal(key: ApiKey) -> str:
    """Why ``key`` may not open one more reply: its limit, and its family's when it has one."""
    budget = key.family_budget
    if budget is None:
        return (
            f"this key has {key.limits.max_streams} replies open, its limit; "
            "retry when one has ended"
        )
    return (
        f"this key may have {key.limits.max_streams} replies open, and its family of keys "
        f"{budget.max_streams} together; retry when one has ended"
    )
