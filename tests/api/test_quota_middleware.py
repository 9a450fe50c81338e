"""The quota layer: 429 for a key over its rate or its open replies, with Retry-After and
the app's JSON error shape; replies counted for as long as they are open."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import httpx
import limits.storage.memory
import limits.strategies
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import chatkeep.quotas.rate
from chatkeep.api.middleware import StackedFastAPI
from chatkeep.domain.keys import ApiKey, KeyLimits
from chatkeep.quotas.failures import FailedAttempts
from chatkeep.quotas.lease import StreamLease, scope_lease
from chatkeep.quotas.middleware import QuotaMiddleware
from chatkeep.quotas.rate import KeyRateLimiter
from chatkeep.quotas.streams import OpenStreams


class FakeTime:
    """Stands for the ``time`` module inside `limits` (which reads ``time.time()``)."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def time(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def wall(monkeypatch: pytest.MonkeyPatch) -> FakeTime:
    """A still wall clock for the rate limiter: no window ends in the middle of a test."""
    fake = FakeTime()
    for module in (limits.storage.memory, limits.strategies, chatkeep.quotas.rate):
        monkeypatch.setattr(module, "time", fake)
    return fake


def make_key(*, rate: float = 1000, burst: int = 1000, max_streams: int = 1) -> ApiKey:
    return ApiKey(
        id="key-1",
        owner_id="owner",
        label=None,
        limits=KeyLimits(rate=rate, burst=burst, max_streams=max_streams, priority=0),
        created_at=0.0,
        created_by="admin",
    )


class Backend:
    """A tiny app: a plain route, a reply held open until `finish`, and one that fails."""

    def __init__(self) -> None:
        self.finish = asyncio.Event()
        self.routes = [
            Route("/plain", self.plain, methods=["GET"]),
            Route("/v1/chat/completions", self.reply, methods=["POST"]),
            Route("/api/conversations/{conversation_id}/stream", self.broken, methods=["GET"]),
        ]
        self.app = Starlette(routes=self.routes)

    async def plain(self, request: Request) -> Response:
        return PlainTextResponse("ok")

    async def reply(self, request: Request) -> Response:
        async def pieces() -> AsyncIterator[bytes]:
            yield b"first"
            await self.finish.wait()
            yield b"last"

        return StreamingResponse(pieces(), media_type="text/event-stream")

    async def broken(self, request: Request) -> Response:
        raise RuntimeError("the route failed")


class WithKey:
    """Puts a key in the scope, as the auth layer does."""

    def __init__(self, app: ASGIApp, key: ApiKey | None) -> None:
        self.app, self.key = app, key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["chatkeep.key"] = self.key
        await self.app(scope, receive, send)


class Setup:
    def __init__(self, key: ApiKey | None) -> None:
        self.backend = Backend()
        self.rate = KeyRateLimiter(max_keys=10)
        self.streams = OpenStreams(max_keys=10)
        quota = QuotaMiddleware(
            self.backend.app,
            rate=self.rate,
            streams=self.streams,
            stream_routes=self.backend.routes[1:],
        )
        self.app = WithKey(quota, key)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://t")


class HeldCall:
    """One request driven by hand, so that its response can be held open."""

    def __init__(self, app: ASGIApp, method: str, path: str) -> None:
        self.messages: list[Message] = []
        self.body_started = asyncio.Event()
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()
        self._inbox.put_nowait({"type": "http.request", "body": b"", "more_body": False})
        scope: dict[str, Any] = {
            "type": "http",
            "http_version": "1.1",
            "method": method,
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "scheme": "http",
            "query_string": b"",
            "headers": [],
            "client": ("127.0.0.1", 50000),
            "server": ("t", 80),
        }
        self.task = asyncio.create_task(app(scope, self._inbox.get, self._send))

    async def _send(self, message: Message) -> None:
        self.messages.append(message)
        if message["type"] == "http.response.body" and message.get("body"):
            self.body_started.set()

    def disconnect(self) -> None:
        self._inbox.put_nowait({"type": "http.disconnect"})

    @property
    def status(self) -> int:
        return int(self.messages[0]["status"])


async def open_reply(app: ASGIApp) -> HeldCall:
    call = HeldCall(app, "POST", "/v1/chat/completions")
    await asyncio.wait_for(call.body_started.wait(), 5)
    return call


async def test_over_its_rate_a_key_gets_429_with_retry_after_and_the_error_shape() -> None:
    setup = Setup(make_key(rate=1, burst=2))
    async with setup.client() as client:
        assert [(await client.get("/plain")).status_code for _ in range(2)] == [200, 200]
        refused = await client.get("/plain")
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["content-type"] == "application/json"
    error = refused.json()["error"]
    assert error["code"] == "rate_limited" and "1 requests a second" in error["message"]
    assert setup.rate.refused == 1


async def test_a_request_without_a_key_passes_untouched() -> None:
    setup = Setup(None)
    async with setup.client() as client:
        statuses = {(await client.get("/plain")).status_code for _ in range(50)}
    assert statuses == {200}
    assert len(setup.rate) == 0 and setup.rate.refused == 0


async def test_a_reply_counts_while_it_is_open_and_one_more_is_refused() -> None:
    setup = Setup(make_key(max_streams=1))
    held = await open_reply(setup.app)
    assert setup.streams.count("key-1") == 1
    async with setup.client() as client:
        refused = await client.post("/v1/chat/completions")
        plain = await client.get("/plain")  # not a reply: not counted, not refused
    assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
    assert refused.json()["error"]["code"] == "rate_limited"
    assert "1 replies open" in refused.json()["error"]["message"]
    assert plain.status_code == 200 and setup.streams.refused == 1
    setup.backend.finish.set()
    await asyncio.wait_for(held.task, 5)
    assert held.status == 200 and setup.streams.count("key-1") == 0
    async with setup.client() as client:
        assert (await client.post("/v1/chat/completions")).status_code == 200


async def test_a_client_that_leaves_gives_its_reply_back() -> None:
    setup = Setup(make_key(max_streams=1))
    held = await open_reply(setup.app)
    held.disconnect()
    await asyncio.wait_for(held.task, 5)  # must end: the stream stops on the disconnect
    assert setup.streams.count("key-1") == 0 and len(setup.streams) == 0


async def test_a_reply_route_that_fails_gives_its_reply_back() -> None:
    setup = Setup(make_key(max_streams=1))
    call = HeldCall(setup.app, "GET", "/api/conversations/c1/stream")
    with pytest.raises(RuntimeError, match="the route failed"):
        await asyncio.wait_for(call.task, 5)
    assert len(setup.streams) == 0


async def test_a_rate_refusal_opens_no_reply() -> None:
    setup = Setup(make_key(rate=1, burst=1, max_streams=5))
    setup.backend.finish.set()
    async with setup.client() as client:
        assert (await client.post("/v1/chat/completions")).status_code == 200
        assert (await client.post("/v1/chat/completions")).status_code == 429
    assert setup.streams.refused == 0 and len(setup.streams) == 0


class Outliving:
    """A reply route whose reply outlives its call (a durable send's): it holds the lease."""

    def __init__(self) -> None:
        self.kept: list[StreamLease] = []
        self.plain_leases: list[StreamLease | None] = []
        reply = Route("/api/conversations/{conversation_id}/messages", self.send, methods=["POST"])
        self.routes = [Route("/plain", self.plain, methods=["GET"]), reply]

    async def send(self, request: Request) -> Response:
        lease = scope_lease(request.scope)
        assert lease is not None
        lease.hold()
        self.kept.append(lease)
        return PlainTextResponse("reply started")

    async def plain(self, request: Request) -> Response:
        self.plain_leases.append(scope_lease(request.scope))
        return PlainTextResponse("ok")


async def test_a_reply_holding_its_lease_keeps_the_keys_slot_after_its_call_ended() -> None:
    backend, streams = Outliving(), OpenStreams(max_keys=10)
    quota = QuotaMiddleware(
        Starlette(routes=backend.routes),
        rate=KeyRateLimiter(max_keys=10),
        streams=streams,
        stream_routes=backend.routes[1:],
    )
    app = WithKey(quota, make_key(max_streams=1))
    send_path = "/api/conversations/c1/messages"
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        assert (await c.post(send_path)).status_code == 200
        assert streams.count("key-1") == 1  # the call is over; its reply is not
        assert (await c.post(send_path)).status_code == 429
        assert (await c.get("/plain")).status_code == 200
        backend.kept[0].release()  # the reply ended
        assert streams.count("key-1") == 0 and len(streams) == 0
        assert (await c.post(send_path)).status_code == 200
    assert backend.plain_leases == [None]  # a route that opens no reply gets no lease
    assert len(backend.kept) == 2 and backend.kept[1].holders == 1
    backend.kept[1].release()
    assert len(streams) == 0


async def test_refusals_reach_metrics_by_reason_and_never_by_key(
    client: httpx.AsyncClient,
) -> None:
    app = client._transport.app  # type: ignore[attr-defined]
    assert isinstance(app, StackedFastAPI)
    rate, streams = KeyRateLimiter(max_keys=10), OpenStreams(max_keys=10)
    attempts = FailedAttempts(per_minute=1, max_clients=10)
    app.state.metrics.attach_quotas(rate=rate, streams=streams, attempts=attempts)
    key = make_key(rate=1, burst=1, max_streams=1)
    rate.hit(key)
    rate.hit(key)
    streams.enter(key)
    streams.enter(key)
    attempts.record("10.0.0.9")
    attempts.retry_after("10.0.0.9")
    text = (await client.get("/metrics")).text
    for reason, count in (("rate", 1), ("streams", 1), ("queue", 0), ("auth_failures", 1)):
        assert f'chatkeep_quota_refusals_total{{reason="{reason}"}} {count:.1f}' in text
    assert "chatkeep_admission_owners_waiting 0.0" in text
    assert "chatkeep_quota_rate_keys 1.0" in text
    assert "chatkeep_quota_open_streams 1.0" in text
    assert "key-1" not in text and "10.0.0.9" not in text


def minted_by(maker: ApiKey, key_id: str) -> ApiKey:
    """A key ``maker`` made, with the same limits, in ``maker``'s family."""
    family, budget = maker.family_of_its_keys()
    return replace(maker, id=key_id, created_by=maker.id, family_id=family, family_budget=budget)


async def test_a_minted_key_is_held_to_its_familys_budget_and_told_so() -> None:
    root = make_key(rate=1000, burst=1000, max_streams=1)
    setup = Setup(root)
    held = await open_reply(setup.app)  # the family's one reply, opened by its root
    assert isinstance(setup.app, WithKey)
    setup.app.key = minted_by(root, "key-2")
    async with setup.client() as client:
        # Refused at once: a timeout here means it was let in (and waits for `finish`).
        refused = await asyncio.wait_for(client.post("/v1/chat/completions"), 5)
    assert refused.status_code == 429
    message = refused.json()["error"]["message"]
    assert "1 replies open, and its family of keys 1 together" in message
    setup.backend.finish.set()
    await asyncio.wait_for(held.task, 5)
    assert setup.streams.total == 0 and len(setup.streams) == 0


async def test_a_minted_keys_rate_refusal_names_both_budgets() -> None:
    root = make_key(rate=2, burst=2)
    setup = Setup(minted_by(root, "key-2"))
    async with setup.client() as client:
        statuses = [(await client.get("/plain")).status_code for _ in range(3)]
        refused = await client.get("/plain")
    assert statuses == [200, 200, 429]
    message = refused.json()["error"]["message"]
    assert message == (
        "this key may make 2 requests a second (bursts of 2), and its family of keys 2 "
        "together (bursts of 2); retry later"
    )
