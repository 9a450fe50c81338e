"""The middleware that counts every request, by route template, method and status.

It is the outermost layer, so it also counts the answers given before any route ran:
a body refused for its size (and, later, a missing key or a rate limit). Such a request
has no route in its scope yet; its template is then found by matching the app's route
patterns against its path, as for routes that do not put themselves in the scope
(Starlette's plain routes).

A request that called a model is also observed in the gateway overhead histogram: its
time less the span from the model call to the backend's last byte, noted by the
generation pipeline in the request's `BackendWait`: the number gateways are compared by,
which a slow model cannot hide or inflate.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from re import Pattern

from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatkeep.api.metrics import UNMATCHED, Metrics
from chatkeep.service.pipeline import BACKEND_WAIT, BackendWait

_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})


class MetricsMiddleware:
    """``MetricsMiddleware(app, metrics=..., on_request=..., routes=...)``.

    Counts each HTTP request and observes its latency (whole streams included) and, when
    it called a model, its gateway overhead; then calls ``on_request`` (the memory
    sampler counts requests). ``routes`` (every route, one by one, not routers) name the
    template of a request answered before routing. Non-HTTP scopes pass through.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: Metrics,
        on_request: Callable[[], None] | None = None,
        routes: Sequence[BaseRoute] = (),
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.on_request = on_request
        # Matched on the path alone (a wrong method is still that route's answer), with
        # the compiled patterns: Starlette's `Route.matches` costs microseconds apiece.
        self._templates: tuple[tuple[Pattern[str], str], ...] = tuple(
            (route.path_regex, route.path) for route in routes if isinstance(route, Route)
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        clock = time.perf_counter
        started = clock()
        status = 500
        wait = BackendWait(clock)
        token = BACKEND_WAIT.set(wait)

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            BACKEND_WAIT.reset(token)
            ended = clock()
            template = self._template(scope)
            method = scope["method"] if scope["method"] in _METHODS else "OTHER"
            self.metrics.requests.labels(template, method, str(status)).inc()
            self.metrics.latency.labels(template).observe(ended - started)
            waited = wait.seconds(ended)
            if waited is not None:
                self.metrics.overhead.labels(template).observe(ended - started - waited)
            if self.on_request is not None:
                self.on_request()

    def _template(self, scope: Scope) -> str:
        route = scope.get("route")
        if route is not None:
            template = getattr(route, "path", None)
            if isinstance(template, str) and template:
                return template
        path = scope["path"]
        for regex, template in self._templates:
            if regex.match(path) is not None:
                return template
        return UNMATCHED
