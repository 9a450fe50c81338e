"""The one middleware stack: every layer sees every route, hot routes included."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import httpx
import pytest
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Receive, Scope, Send

from chatkeep.api.middleware import (
    KEY_SCOPE_KEY,
    OWNER_SCOPE_KEY,
    AuthMiddleware,
    BodyLimitMiddleware,
    HotRoutes,
    MetricsMiddleware,
    StackedFastAPI,
)
from chatkeep.app import HOT_ROUTES
from chatkeep.quotas.middleware import QuotaMiddleware
from tests.api.conftest import ClientFactory

Seen = set[tuple[str, str, str]]


class Probe:
    """Builds one layer of the stack and records every HTTP request that reaches it."""

    def __init__(self, app: ASGIApp, *, layer: Middleware, seen: Seen) -> None:
        cls, args, kwargs = layer
        self.name: str = cls.__name__
        self.layer = cls(app, *args, **kwargs)
        self.seen = seen

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.seen.add((self.name, scope["method"], scope["path"]))
        await self.layer(scope, receive, send)


def _app(client: httpx.AsyncClient) -> StackedFastAPI:
    app = client._transport.app  # type: ignore[attr-defined]
    assert isinstance(app, StackedFastAPI)
    return app


def _routes(app: StackedFastAPI) -> list[Any]:
    """Every route of the app, one by one (newer FastAPI includes routers lazily)."""
    try:
        from fastapi.routing import iter_route_contexts  # type: ignore[attr-defined]
    except ImportError:
        return list(app.routes)
    return list(iter_route_contexts(app.routes))


def _every_route(app: StackedFastAPI) -> set[tuple[str, str]]:
    """(method, path) of each route FastAPI knows, plus the hot routes, ids filled in."""
    templates = {(method, route.path) for route in _routes(app) for method in route.methods or ()}
    templates |= set(HOT_ROUTES)
    return {(method, re.sub(r"\{[^}]+\}", "conv_dummy", path)) for method, path in templates}


async def test_every_middleware_sees_every_route(make_client: ClientFactory) -> None:
    client = await make_client()
    app = _app(client)
    layers = [layer.cls for layer in app.layers]
    for expected in (
        MetricsMiddleware,
        BodyLimitMiddleware,
        AuthMiddleware,
        QuotaMiddleware,
        HotRoutes,
    ):
        assert expected in layers, f"{expected.__name__} is not in the stack"
    seen: Seen = set()
    # Before the first request: the stack is built from `layers` when it is first called.
    app.layers = [Middleware(Probe, layer=layer, seen=seen) for layer in app.layers]

    requests = _every_route(app)
    assert ("POST", "/v1/chat/completions") in requests
    assert ("POST", "/api/conversations/conv_dummy/messages") in requests
    for method, path in sorted(requests):
        # An invalid body: every route answers at once (422, 404…), none starts real work.
        response = await client.request(
            method, path, content=b"[]", headers={"content-type": "application/json"}
        )
        assert response.status_code < 500, (method, path, response.text)

    missed = [
        (layer.cls.__name__, method, path)
        for layer in app.layers
        for method, path in requests
        if (layer.kwargs["layer"].cls.__name__, method, path) not in seen
    ]
    assert not missed, missed


async def test_add_middleware_around_fastapi_alone_is_refused(client: httpx.AsyncClient) -> None:
    with pytest.raises(RuntimeError, match="layers"):
        _app(client).add_middleware(AuthMiddleware, mode="none", default_owner="x")


async def test_each_hot_route_is_one_registered_route(client: httpx.AsyncClient) -> None:
    app = _app(client)
    routes = _routes(app)
    registered = Counter((method, route.path) for route in routes for method in route.methods or ())
    duplicates = [key for key, count in registered.items() if count > 1]
    assert not duplicates, duplicates
    hot = next(layer for layer in app.layers if layer.cls is HotRoutes)
    for route in hot.kwargs["routes"]:
        # The dispatcher runs the endpoint of the very route FastAPI serves and documents.
        served = [r for r in routes if r.path == route.path and r.methods == route.methods]
        assert [r.endpoint for r in served] == [route.endpoint], route.path
    assert {(m, r.path) for r in hot.kwargs["routes"] for m in r.methods} == set(HOT_ROUTES)


def _ref(schema: dict[str, Any]) -> str:
    return str(schema["$ref"]).rsplit("/", 1)[-1]


async def test_openapi_documents_the_hot_routes(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    schemas = document["components"]["schemas"]

    chat = document["paths"]["/v1/chat/completions"]["post"]
    body = chat["requestBody"]["content"]["application/json"]["schema"]
    assert _ref(body) == "ChatCompletionRequest"
    assert {"model", "messages"} <= set(schemas["ChatCompletionRequest"]["required"])
    answer = chat["responses"]["200"]["content"]
    assert _ref(answer["application/json"]["schema"]) == "ChatCompletion"
    assert "text/event-stream" in answer
    assert _ref(chat["responses"]["422"]["content"]["application/json"]["schema"]) == (
        "ErrorAnswer"
    )

    send = document["paths"]["/api/conversations/{conversation_id}/messages"]["post"]
    body = send["requestBody"]["content"]["application/json"]["schema"]
    assert _ref(body) == "SendMessage"
    assert "content" in schemas["SendMessage"]["required"]
    parameters = {(p["in"], p["name"]) for p in send["parameters"]}
    assert {("path", "conversation_id"), ("header", "idempotency-key")} <= parameters
    answer = send["responses"]["200"]["content"]
    assert _ref(answer["application/json"]["schema"]) == "SentMessage"
    assert "text/event-stream" in answer
    for status in ("404", "409", "422", "503"):
        error = send["responses"][status]["content"]["application/json"]["schema"]
        assert _ref(error) == "ErrorAnswer", status


async def test_owner_seam_sets_the_owner_and_passes_other_scopes() -> None:
    reached: list[Scope] = []

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        reached.append(scope)

    seam = AuthMiddleware(inner, mode="none", default_owner="default", admin_token=None)

    async def receive() -> Any:
        raise AssertionError("not read")

    async def send(message: Any) -> None:
        raise AssertionError("not sent")

    forged = {"type": "http", "headers": [], OWNER_SCOPE_KEY: "forged", KEY_SCOPE_KEY: "forged"}
    await seam(forged, receive, send)
    await seam({"type": "lifespan"}, receive, send)
    assert reached[0][OWNER_SCOPE_KEY] == "default"
    assert reached[0][KEY_SCOPE_KEY] is None
    assert OWNER_SCOPE_KEY not in reached[1]


async def test_openapi_lists_every_route_but_the_documentation_itself(
    client: httpx.AsyncClient,
) -> None:
    app = _app(client)
    served = {
        (method.lower(), route.path)
        for route in _routes(app)
        for method in route.methods or ()
        if method != "HEAD"
    }
    documentation = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
    document = (await client.get("/openapi.json")).json()
    listed = {(method, path) for path, ops in document["paths"].items() for method in ops}
    assert {(m, p) for m, p in served if p not in documentation} == listed
