"""A durable reply holds its key's stream slot for as long as it runs, client gone or not.

The finding this guards against: a key with ``max_streams`` 1 sent a streamed message,
read up to ``event: message`` and left, conversation after conversation; every reply went
on generating while the slot counted only the (closed) HTTP calls, so one key held nearly
every generation slot. Counted, never timed: the open slots are read from ``/metrics``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from starlette.types import ASGIApp, Message

from chatkeep.api.state import AppState
from chatkeep.domain.keys import ApiKey, KeyLimits
from chatkeep.errors import ProviderUnavailable
from chatkeep.quotas.lease import StreamLease
from chatkeep.quotas.streams import OpenStreams
from chatkeep.settings import StreamSettings
from tests.api.conftest import ClientFactory, GatedProvider

ADMIN = {"authorization": "Bearer " + "a" * 40}
#: The smallest reply buffer there is: a longer reply is cut.
BUFFER_BYTES = 1024


@dataclass
class World:
    """An app in keys mode, one key, and its conversations."""

    client: httpx.AsyncClient
    app: ASGIApp
    gated: GatedProvider
    headers: dict[str, str]

    @property
    def state(self) -> AppState:
        app_state: AppState = self.app.state.chatkeep  # type: ignore[attr-defined]
        return app_state

    async def conversation(self, model: str = "gated") -> str:
        answer = await self.client.post(
            "/api/conversations", json={"model": model}, headers=self.headers
        )
        assert answer.status_code == 201, answer.text
        return str(answer.json()["id"])

    async def send(self, cid: str, **body: Any) -> httpx.Response:
        return await self.client.post(
            f"/api/conversations/{cid}/messages",
            json={"content": "a question", **body},
            headers=self.headers,
        )

    async def open_slots(self) -> float:
        text = (await self.client.get("/metrics", headers=ADMIN)).text
        line = next(x for x in text.splitlines() if x.startswith("chatkeep_quota_open_streams "))
        return float(line.split()[1])

    async def left_mid_stream(self, cid: str, **body: Any) -> int:
        """Send a streamed message, read up to its ``message`` event, leave; the status."""
        call = HeldSend(self.app, cid, self.headers, {"content": "a question", **body})
        await asyncio.wait_for(call.first_event_or_end(), 5)
        call.disconnect()
        await asyncio.wait_for(call.task, 5)  # the call ends on the disconnect
        return call.status


def reply_task(cid: str) -> asyncio.Task[Any]:
    """The running reply of conversation ``cid`` (it belongs to the server, not a call)."""
    return next(t for t in asyncio.all_tasks() if t.get_name() == f"reply-{cid}")


class HeldSend:
    """A streamed send driven by hand over ASGI, so that its client can leave mid-stream."""

    def __init__(
        self, app: ASGIApp, cid: str, headers: dict[str, str], body: dict[str, Any]
    ) -> None:
        self.messages: list[Message] = []
        self._read = asyncio.Event()
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()
        payload = json.dumps({**body, "stream": True}).encode()
        self._inbox.put_nowait({"type": "http.request", "body": payload, "more_body": False})
        path = f"/api/conversations/{cid}/messages"
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "scheme": "http",
            "query_string": b"",
            "headers": [
                (b"host", b"chatkeep.test"),
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *((k.encode(), v.encode()) for k, v in headers.items()),
            ],
            "client": ("127.0.0.1", 50000),
            "server": ("chatkeep.test", 80),
        }

        async def call() -> None:
            await app(scope, self._inbox.get, self._send)

        self.task = asyncio.create_task(call())

    async def _send(self, message: Message) -> None:
        self.messages.append(message)
        body = message.get("body", b"")
        if b"event: message" in body or not message.get("more_body", False):
            self._read.set()

    async def first_event_or_end(self) -> None:
        """The ``message`` event arrived, or the answer is over (a refusal)."""
        await self._read.wait()

    def disconnect(self) -> None:
        self._inbox.put_nowait({"type": "http.disconnect"})

    @property
    def status(self) -> int:
        return int(self.messages[0]["status"])


@pytest.fixture
async def world(make_client: ClientFactory, gated: GatedProvider) -> World:
    client = await make_client(
        auth="keys", admin_token="a" * 40, streams=StreamSettings(buffer_bytes=BUFFER_BYTES)
    )
    minted = await client.post(
        "/admin/keys",
        json={"owner": "dave", "rate": 50, "burst": 100, "max_streams": 1},
        headers=ADMIN,
    )
    assert minted.status_code == 201, minted.text
    headers = {"authorization": f"Bearer {minted.json()['secret']}"}
    return World(client, client._transport.app, gated, headers)  # type: ignore[attr-defined]


async def test_a_reply_whose_client_left_holds_the_keys_slot_until_it_ends(world: World) -> None:
    cids = [await world.conversation() for _ in range(5)]
    later = await world.conversation("echo")
    statuses = [await world.left_mid_stream(cid) for cid in cids]
    # The first reply is generating with no client: the key's one slot is still taken.
    assert statuses == [200, 429, 429, 429, 429]
    assert not reply_task(cids[0]).done()
    stats = (await world.client.get("/admin/stats", headers=ADMIN)).json()
    assert stats["generations"]["running_replies"] == 1
    refused = await world.send(later)
    assert refused.status_code == 429
    assert "1 replies open" in refused.json()["error"]["message"]
    world.gated.release("the answer", None)
    await asyncio.wait_for(reply_task(cids[0]), 5)
    assert await world.open_slots() == 0
    assert (await world.send(later)).status_code == 200


async def _complete(world: World, cid: str) -> None:
    world.gated.release("the answer", None)
    await asyncio.wait_for(reply_task(cid), 5)


async def _fail(world: World, cid: str) -> None:
    world.gated.release("half an ", ProviderUnavailable("backend answered 500: boom"))
    await asyncio.wait_for(reply_task(cid), 5)


async def _cut(world: World, cid: str) -> None:
    world.gated.release("x" * (BUFFER_BYTES + 1))  # longer than a reply may be
    await asyncio.wait_for(reply_task(cid), 5)


async def _cancel(world: World, cid: str) -> None:
    answer = await world.client.post(f"/api/conversations/{cid}/cancel", headers=world.headers)
    assert answer.status_code == 200, answer.text


async def _shut_down(world: World, cid: str) -> None:
    await world.state.replies.shutdown(0.0)


@pytest.mark.parametrize(
    "end",
    [_complete, _fail, _cut, _cancel, _shut_down],
    ids=["complete", "provider failure", "cut", "cancel", "shutdown"],
)
async def test_however_a_reply_ends_it_gives_the_slot_back(
    world: World, end: Callable[[World, str], Awaitable[None]]
) -> None:
    cid = await world.conversation()
    assert await world.left_mid_stream(cid) == 200
    await asyncio.wait_for(world.gated.started.wait(), 5)
    reply = reply_task(cid)
    assert await world.open_slots() == 1
    await end(world, cid)
    assert reply.done()
    assert await world.open_slots() == 0


async def test_a_replayed_send_holds_nothing_past_its_call(
    make_client: ClientFactory, gated: GatedProvider
) -> None:
    client = await make_client(auth="keys", admin_token="a" * 40)
    minted = await client.post(
        "/admin/keys", json={"owner": "dave", "max_streams": 2}, headers=ADMIN
    )
    headers = {"authorization": f"Bearer {minted.json()['secret']}"}
    world = World(client, client._transport.app, gated, headers)  # type: ignore[attr-defined]
    cid = await world.conversation()
    assert await world.left_mid_stream(cid, client_message_id="m1") == 200
    await asyncio.wait_for(gated.started.wait(), 5)
    # The same send again while its reply runs: it reads that reply and starts none.
    assert await world.left_mid_stream(cid, client_message_id="m1") == 200
    assert await world.open_slots() == 1
    await _complete(world, cid)
    assert await world.open_slots() == 0
    replayed = await world.send(cid, client_message_id="m1")  # answered from storage
    assert replayed.status_code == 200 and replayed.json()["assistant_message"]
    assert await world.open_slots() == 0


async def test_a_send_refused_before_its_reply_starts_holds_nothing(
    make_client: ClientFactory, gated: GatedProvider
) -> None:
    client = await make_client(auth="keys", admin_token="a" * 40)
    minted = await client.post(
        "/admin/keys", json={"owner": "dave", "max_streams": 2}, headers=ADMIN
    )
    headers = {"authorization": f"Bearer {minted.json()['secret']}"}
    world = World(client, client._transport.app, gated, headers)  # type: ignore[attr-defined]
    cid = await world.conversation()
    assert await world.left_mid_stream(cid) == 200
    await asyncio.wait_for(gated.started.wait(), 5)
    busy = await world.send(cid, content="another question")  # its reply is still running
    missing = await world.send("no-such-conversation")
    assert (busy.status_code, missing.status_code) == (409, 404)
    assert await world.open_slots() == 1  # the running reply's, nothing of the refusals
    await _complete(world, cid)
    assert await world.open_slots() == 0


def _key(max_streams: int = 1) -> ApiKey:
    limits = KeyLimits(rate=10, burst=10, max_streams=max_streams, priority=0)
    return ApiKey(
        id="key-1", owner_id="owner", label=None, limits=limits, created_at=0.0, created_by="admin"
    )


def test_a_lease_leaves_its_slot_when_its_last_holder_lets_go() -> None:
    streams = OpenStreams(max_keys=4)
    lease = StreamLease.take(streams, _key())
    assert lease is not None and lease.holders == 1
    assert StreamLease.take(streams, _key()) is None  # at the key's limit
    lease.hold()
    lease.release()
    assert streams.count("key-1") == 1  # one holder left
    lease.release()
    assert streams.count("key-1") == 0 and len(streams) == 0 and lease.holders == 0
    assert StreamLease.take(streams, _key()) is not None


def test_a_lease_given_back_cannot_be_held_or_released_again() -> None:
    streams = OpenStreams(max_keys=4)
    lease = StreamLease.take(streams, _key(max_streams=2))
    other = StreamLease.take(streams, _key(max_streams=2))
    assert lease is not None and other is not None
    lease.release()
    with pytest.raises(RuntimeError, match="already given back"):
        lease.hold()
    with pytest.raises(RuntimeError, match="released more times"):
        lease.release()
    assert streams.count("key-1") == 1  # the misuse left the other lease's slot alone
