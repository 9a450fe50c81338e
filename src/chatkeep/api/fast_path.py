"""Routes served before FastAPI's middleware stack: the gateway's hot path.

``POST /v1/chat/completions`` is what the benchmarks measure against a direct backend.
FastAPI's per-request machinery (its exception and exit-stack middleware, router and
dependency solving) costs more than the relay itself, so `FastPathApp` hands such a route
straight to its endpoint, wrapped only in what it needs: the body limit, the metrics, and
the mapping of errors to JSON answers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from chatkeep.api.errors import on_chatkeep_error, on_http_error, on_unexpected_error
from chatkeep.errors import ChatkeepError

Endpoint = Callable[[Request], Awaitable[Response]]


class FastPathApp(FastAPI):
    """FastAPI, with some (method, path) pairs dispatched before its middleware stack."""

    fast_routes: list[tuple[str, Route, ASGIApp]]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for method, route, handler in self.fast_routes:
                if scope["method"] != method:
                    continue
                match = route.path_regex.match(scope["path"])
                if match is None:
                    continue
                # Set before anything runs, so even a body refused for its size is
                # counted under the route's template.
                scope["app"], scope["route"] = self, route
                scope["path_params"] = match.groupdict()
                await handler(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def fast_endpoint(endpoint: Endpoint) -> ASGIApp:
    """An ASGI app running ``endpoint`` with chatkeep's JSON errors."""

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
