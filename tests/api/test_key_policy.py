"""What a key allows on the routes: only its models (others look unknown), and never a
priority ahead of its own."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Receive, Scope, Send

from chatkeep.api.middleware import StackedFastAPI
from chatkeep.domain.keys import ApiKey, KeyLimits
from chatkeep.service.pipeline import Slot
from tests.api.conftest import ClientFactory


class KeyHolder:
    """The key the next requests come with (``None``: no key, as with ``auth=none``)."""

    key: ApiKey | None = None


class WithKey:
    """Puts the holder's key in the scope, as the auth layer does."""

    def __init__(self, app: ASGIApp, *, holder: KeyHolder) -> None:
        self.app, self.holder = app, holder

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope["chatkeep.key"] = self.holder.key
        await self.app(scope, receive, send)


def make_key(*, models: tuple[str, ...] | None = None, priority: int = 0) -> ApiKey:
    return ApiKey(
        id="key-1",
        owner_id="default",
        label=None,
        limits=KeyLimits(rate=1000, burst=1000, max_streams=10, priority=priority, models=models),
        created_at=0.0,
        created_by="admin",
    )


@pytest.fixture
async def keyed(make_client: ClientFactory) -> tuple[httpx.AsyncClient, KeyHolder]:
    client = await make_client()
    app = client._transport.app  # type: ignore[attr-defined]
    assert isinstance(app, StackedFastAPI)
    holder = KeyHolder()
    # Right in front of the hot routes, after the auth layer, as the quota layer sits.
    app.layers.insert(len(app.layers) - 1, Middleware(WithKey, holder=holder))
    return client, holder


def completion(model: str) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}]}


async def test_a_key_lists_only_its_models(keyed: tuple[httpx.AsyncClient, KeyHolder]) -> None:
    client, holder = keyed
    holder.key = make_key(models=("gated", "echo"))
    ids = [m["id"] for m in (await client.get("/v1/models")).json()["data"]]
    assert ids == ["echo", "gated"]  # in the registry's order, not the key's
    holder.key = make_key()
    ids = [m["id"] for m in (await client.get("/v1/models")).json()["data"]]
    assert ids == ["echo", "failing", "gated"]


async def test_another_model_is_answered_as_an_unknown_one(
    keyed: tuple[httpx.AsyncClient, KeyHolder],
) -> None:
    client, holder = keyed
    holder.key = make_key(models=("echo",))
    forbidden = await client.post("/v1/chat/completions", json=completion("gated"))
    missing = await client.post("/v1/chat/completions", json=completion("no-such-model"))
    assert forbidden.status_code == missing.status_code == 422
    assert forbidden.json()["error"]["code"] == missing.json()["error"]["code"] == "unknown_model"
    assert forbidden.json()["error"]["message"] == "unknown model 'gated'; known models: echo"
    assert (await client.post("/v1/chat/completions", json=completion("echo"))).status_code == 200


async def test_a_conversation_is_created_only_with_the_keys_models(
    keyed: tuple[httpx.AsyncClient, KeyHolder],
) -> None:
    client, holder = keyed
    holder.key = make_key(models=("gated",))
    refused = await client.post("/api/conversations", json={"model": "echo"})
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "unknown_model"
    # Without a model, the key's own first model when it may not use the default.
    created = await client.post("/api/conversations", json={})
    assert created.status_code == 201 and created.json()["model"] == "gated"
    holder.key = make_key(models=("gated", "echo"))
    created = await client.post("/api/conversations", json={})
    assert created.json()["model"] == "echo"


async def test_a_send_in_a_conversation_of_another_model_is_refused_and_stores_nothing(
    keyed: tuple[httpx.AsyncClient, KeyHolder],
) -> None:
    client, holder = keyed
    conversation = (await client.post("/api/conversations", json={"model": "echo"})).json()
    holder.key = make_key(models=("gated",))
    url = f"/api/conversations/{conversation['id']}/messages"
    refused = await client.post(url, json={"content": "hello"})
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "unknown_model"
    assert (await client.get(url)).json()["items"] == []
    holder.key = make_key(models=("echo",))
    assert (await client.post(url, json={"content": "hello"})).status_code == 200


async def test_a_request_runs_at_its_keys_priority_or_later_and_for_its_owner(
    keyed: tuple[httpx.AsyncClient, KeyHolder],
) -> None:
    client, holder = keyed
    app = client._transport.app  # type: ignore[attr-defined]
    pipeline = app.state.chatkeep.pipeline
    admitted: list[tuple[int, str | None]] = []
    real_admit = pipeline.admit

    async def spy(priority: int = 0, owner: str | None = None) -> Slot:
        admitted.append((priority, owner))
        slot: Slot = await real_admit(priority, owner)
        return slot

    pipeline.admit = spy
    conversation = (await client.post("/api/conversations", json={})).json()
    url = f"/api/conversations/{conversation['id']}/messages"
    holder.key = make_key(priority=5)
    await client.post(url, json={"content": "a", "priority": 0})  # asks ahead: runs at 5
    await client.post(url, json={"content": "b", "priority": 7})  # asks later: runs at 7
    await client.post("/v1/chat/completions", json=completion("echo"))
    holder.key = None
    await client.post(url, json={"content": "c", "priority": 2})
    assert admitted == [(5, "default"), (7, "default"), (5, "default"), (2, "default")]
