"""The hot-route dispatcher: the innermost layer of the stack, right in front of FastAPI.

``POST /v1/chat/completions`` and the send route carry the traffic the benchmarks measure
against a direct backend. FastAPI's per-request machinery (its exception and exit-stack
middleware, router and dependency solving) costs more than the relay itself, so `HotRoutes`
calls their endpoints directly, with chatkeep's JSON errors, and hands every other request
on to FastAPI. It is a layer *of* the stack, not a bypass around it: every middleware
outside it sees a hot request exactly like any other.

The hot routes are FastAPI's own routes, registered as usual with their OpenAPI
declarations; the dispatcher takes their endpoint from the route table, so each has one
implementation and one entry in ``/openapi.json``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from re import Pattern

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from chatkeep.api.errors import on_chatkeep_error, on_http_error, on_unexpected_error
from chatkeep.errors import ChatkeepError

Endpoint = Callable[[Request], Awaitable[Response]]


class HotRoutes:
    """``HotRoutes(app, routes=[...])``: run these routes' endpoints, pass the rest to ``app``.

    Each route's endpoint must take the `Request` alone and read its own body. Only HTTP
    scopes are matched; anything else goes to ``app`` untouched.
    """

    def __init__(self, app: ASGIApp, *, routes: Sequence[Route]) -> None:
        self.app = app
        self.routes = routes
        # Matched in order, with no per-request allocation but the path parameters.
        self._table: tuple[tuple[frozenset[str], Pattern[str], Route, ASGIApp], ...] = tuple(
            (
                frozenset(route.methods or ()),
                route.path_regex,
                route,
                with_json_errors(route.endpoint),
            )
            for route in routes
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            method, path = scope["method"], scope["path"]
            for methods, regex, route, endpoint in self._table:
                if method not in methods:
                    continue
                match = regex.match(path)
                if match is None:
                    continue
                # The same keys FastAPI's router sets: the metrics read the route template.
                scope["route"] = route
                scope["path_params"] = match.groupdict()
                await endpoint(scope, receive, send)
                return
        await self.app(scope, receive, send)


def with_json_errors(endpoint: Endpoint) -> ASGIApp:
    """An ASGI app running ``endpoint`` with chatkeep's JSON errors (FastAPI's handlers' twins)."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        try:
            response = await endpoint(request)
        except ChatkeepError as exc:
            response = await on_chatkeep_error(request, exc)
        except HTTPException as exc:
            response = await on_http_error(request, exc)
        except Exception as exc:
            response = await on_unexpected_error(request, exc)
        await response(scope, receive, send)

    return app


def find_route(routes: Iterable[BaseRoute], method: str, path: str) -> Route:
    """The registered route serving ``method`` on the path template ``path``."""
    for route in routes:
        if isinstance(route, Route) and route.path == path and method in (route.methods or ()):
            return route
    raise LookupError(f"no route {method} {path} is registered")
