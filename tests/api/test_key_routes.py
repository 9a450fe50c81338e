"""``/admin/keys`` and ``/api/keys``: secrets shown once, owners kept apart, no escalation.

The routes run in a small app of their own, behind a layer that plays the auth layer's
part (it puts the calling key, its owner and the admin flag in the scope).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import limits.storage.memory
import limits.strategies
import pytest
from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

import chatkeep.quotas.rate
from chatkeep.api import key_routes
from chatkeep.api.errors import install_error_handlers
from chatkeep.auth.key_cache import KeyCache
from chatkeep.auth.secrets import hash_secret, new_secret
from chatkeep.domain.keys import ApiKey, KeyLimits
from chatkeep.settings import AccessSettings, ModelConfig, Settings
from chatkeep.storage.memory import MemoryStore
from tests.api.conftest import ClientFactory

SETTINGS = Settings(
    storage="memory",
    models={"echo": ModelConfig(provider="echo"), "small": ModelConfig(provider="echo")},
    access=AccessSettings(rate=20, burst=40),
)


@dataclass
class Caller:
    """Who the next request comes from: a key, or none (the admin, ``auth=none``)."""

    key: ApiKey | None = None


@dataclass
class RouteState:
    """The parts of the app state the key routes read."""

    settings: Settings
    store: MemoryStore
    keys: KeyCache
    extra: dict[str, Any] = field(default_factory=dict)


class AsCaller:
    """Plays the auth layer: the scope says who calls, as `Caller` says."""

    def __init__(self, app: ASGIApp, caller: Caller) -> None:
        self.app = app
        self.caller = caller

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            key = self.caller.key
            scope["chatkeep.key"] = key
            scope["chatkeep.owner"] = key.owner_id if key is not None else "default"
            scope["chatkeep.admin"] = False
        await self.app(scope, receive, send)


@dataclass
class Harness:
    client: httpx.AsyncClient
    caller: Caller
    cache: KeyCache
    app: FastAPI
    store: MemoryStore

    async def as_key(self, secret: str) -> None:
        """Make the following requests with the key of ``secret``."""
        self.caller.key = await self.cache.lookup(secret)
        assert self.caller.key is not None

    async def admin_key(self, owner: str, **limits: Any) -> dict[str, Any]:
        self.caller.key = None
        response = await self.client.post("/admin/keys", json={"owner": owner, **limits})
        assert response.status_code == 201, response.text
        return flat(response)


def flat(created: httpx.Response) -> dict[str, Any]:
    """A create's answer ``{"secret", "key"}`` as one dict, for short assertions."""
    body = created.json()
    assert set(body) == {"secret", "key"}, body
    return {**body["key"], "secret": body["secret"]}


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    store = MemoryStore()
    cache = KeyCache(store, maxsize=100, ttl_seconds=3600.0)
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(key_routes.admin_router)
    app.include_router(key_routes.router)
    app.state.chatkeep = RouteState(SETTINGS, store, cache)
    caller = Caller()
    transport = httpx.ASGITransport(app=AsCaller(app, caller))
    async with httpx.AsyncClient(transport=transport, base_url="http://chatkeep.test") as client:
        yield Harness(client, caller, cache, app, store)


async def test_the_admin_creates_a_key_whose_secret_is_shown_once(harness: Harness) -> None:
    created = await harness.admin_key("alice", label="laptop", rate=5, models=["echo"])
    assert created["secret"].startswith("ck_")
    assert created["owner_id"] == "alice" and created["label"] == "laptop"
    assert (created["rate"], created["burst"], created["models"]) == (5.0, 40, ["echo"])
    assert created["created_by"] == "admin" and created["revoked_at"] is None
    key = await harness.cache.lookup(created["secret"])
    assert key is not None and key.id == created["id"]

    listing = await harness.client.get("/admin/keys")
    assert listing.status_code == 200
    assert created["secret"] not in listing.text
    [listed] = listing.json()["items"]
    assert listed == {k: v for k, v in created.items() if k != "secret"}


async def test_the_admin_lists_every_owner_or_one_a_page_at_a_time(harness: Harness) -> None:
    for owner in ("alice", "bob", "alice"):
        await harness.admin_key(owner)
    alice = (await harness.client.get("/admin/keys", params={"owner": "alice"})).json()
    assert [key["owner_id"] for key in alice["items"]] == ["alice", "alice"]
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 1, **({"cursor": cursor} if cursor else {})}
        page = (await harness.client.get("/admin/keys", params=params)).json()
        seen.extend(key["id"] for key in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(set(seen)) == 3
    bad = await harness.client.get("/admin/keys", params={"cursor": "forged"})
    assert bad.status_code == 422


async def test_the_admin_gets_the_defaults_and_every_model_unless_it_says(
    harness: Harness,
) -> None:
    plain = await harness.admin_key("alice")
    assert (plain["rate"], plain["burst"], plain["max_streams"], plain["priority"]) == (
        20.0,
        40,
        8,
        0,
    )
    assert plain["models"] is None
    explicit = await harness.admin_key("alice", models=None, priority=9)
    assert explicit["models"] is None and explicit["priority"] == 9


async def test_an_admin_revoke_takes_effect_at_once(harness: Harness) -> None:
    created = await harness.admin_key("alice")
    assert await harness.cache.lookup(created["secret"]) is not None
    revoked = await harness.client.delete(f"/admin/keys/{created['id']}")
    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"] is not None
    assert await harness.cache.lookup(created["secret"]) is None  # not after the cache's hour
    missing = await harness.client.delete("/admin/keys/key_nope")
    assert missing.status_code == 404


async def test_admin_routes_refuse_a_remote_client_without_the_token(harness: Harness) -> None:
    transport = httpx.ASGITransport(
        app=AsCaller(harness.app, harness.caller), client=("203.0.113.7", 5000)
    )
    async with httpx.AsyncClient(transport=transport, base_url="http://chatkeep.test") as remote:
        assert (await remote.get("/admin/keys")).status_code == 401
        assert (await remote.post("/admin/keys", json={"owner": "x"})).status_code == 401


async def test_a_key_lists_only_itself_and_the_keys_it_made(harness: Harness) -> None:
    alice = await harness.admin_key("alice")
    await harness.admin_key("bob")
    await harness.admin_key("alice")  # the same owner's, but not made by this key
    await harness.as_key(alice["secret"])
    child = flat(await harness.client.post("/api/keys", json={}))
    await harness.as_key(child["secret"])
    grandchild = flat(await harness.client.post("/api/keys", json={}))
    await harness.as_key(alice["secret"])
    listing = await harness.client.get("/api/keys")
    assert listing.status_code == 200
    assert [key["id"] for key in listing.json()["items"]] == [
        grandchild["id"],
        child["id"],
        alice["id"],
    ]
    assert "secret" not in listing.text
    await harness.as_key(child["secret"])
    listing = await harness.client.get("/api/keys")
    assert [key["id"] for key in listing.json()["items"]] == [grandchild["id"], child["id"]]


async def test_the_weakest_key_cannot_see_or_revoke_a_stronger_key_of_its_owner(
    harness: Harness,
) -> None:
    full = await harness.admin_key("alice", label="full")
    low = await harness.admin_key("alice", label="low", rate=1, burst=1, max_streams=1)
    await harness.as_key(low["secret"])
    listing = (await harness.client.get("/api/keys")).json()
    assert [key["id"] for key in listing["items"]] == [low["id"]]
    refused = await harness.client.delete(f"/api/keys/{full['id']}")
    assert refused.status_code == 404
    assert refused.json()["error"]["message"] == f"key {full['id']} not found"
    assert await harness.cache.lookup(full["secret"]) is not None
    # Nor can a key it made reach back up to it, or across to a sibling.
    first = flat(await harness.client.post("/api/keys", json={}))
    second = flat(await harness.client.post("/api/keys", json={}))
    await harness.as_key(first["secret"])
    for key_id in (low["id"], second["id"], full["id"]):
        assert (await harness.client.delete(f"/api/keys/{key_id}")).status_code == 404
    assert await harness.cache.lookup(low["secret"]) is not None
    assert await harness.cache.lookup(second["secret"]) is not None


async def test_revoking_a_key_stops_every_key_it_made_at_once(harness: Harness) -> None:
    root = await harness.admin_key("alice")
    await harness.as_key(root["secret"])
    child = flat(await harness.client.post("/api/keys", json={"label": "child"}))
    sibling = flat(await harness.client.post("/api/keys", json={"label": "sibling"}))
    await harness.as_key(child["secret"])
    grandchild = flat(await harness.client.post("/api/keys", json={"label": "grandchild"}))
    for made in (child, grandchild, sibling):
        assert await harness.cache.lookup(made["secret"]) is not None  # cached for an hour

    await harness.as_key(root["secret"])
    revoked = await harness.client.delete(f"/api/keys/{child['id']}")
    assert revoked.status_code == 200 and revoked.json()["id"] == child["id"]
    assert await harness.cache.lookup(child["secret"]) is None
    assert await harness.cache.lookup(grandchild["secret"]) is None  # at once, and for good
    assert await harness.cache.lookup(sibling["secret"]) is not None

    harness.caller.key = None
    assert (await harness.client.delete(f"/admin/keys/{root['id']}")).status_code == 200
    assert await harness.cache.lookup(sibling["secret"]) is None


@pytest.mark.parametrize("name", ["zzz", "small"])
async def test_a_model_restricted_key_learns_nothing_of_other_models(
    harness: Harness, name: str
) -> None:
    maker = await harness.admin_key("alice", models=["echo"])
    await harness.as_key(maker["secret"])
    response = await harness.client.post("/api/keys", json={"models": [name]})
    assert response.status_code == 403, response.text
    error = response.json()["error"]
    # The same answer whether or not the model is configured ("small" is, "zzz" is not).
    assert error["message"] == f"models: {name} is not among this key's models (echo)"
    other = {"zzz", "small"} - {name}
    assert not any(model in response.text for model in other)


async def test_a_key_asking_for_its_own_retired_model_hears_only_of_its_own(
    harness: Harness,
) -> None:
    # A key kept from before "retired" left the settings, restricted to it and echo.
    limits = KeyLimits(rate=5.0, burst=5, max_streams=1, priority=0, models=("echo", "retired"))
    secret = new_secret()
    await harness.store.create_api_key(
        ApiKey("key_old", "alice", None, limits, 1.0, "admin"), secret_hash=hash_secret(secret)
    )
    await harness.as_key(secret)
    response = await harness.client.post("/api/keys", json={"models": ["retired"]})
    assert response.status_code == 422
    message = response.json()["error"]["message"]
    assert "retired" in message and "echo" in message and "small" not in message
    harness.caller.key = None  # the admin hears of every configured model
    admin = await harness.client.post("/admin/keys", json={"owner": "a", "models": ["zzz"]})
    assert admin.status_code == 422
    assert "echo" in admin.text and "small" in admin.text


async def test_the_owner_cap_binds_keys_that_mint_never_the_admin(harness: Harness) -> None:
    state = harness.app.state.chatkeep
    state.settings = SETTINGS.model_copy(
        update={"access": SETTINGS.access.model_copy(update={"max_keys_per_owner": 2})}
    )
    leaked = await harness.admin_key("alice", rate=1)
    await harness.as_key(leaked["secret"])
    assert (await harness.client.post("/api/keys", json={})).status_code == 201
    full = await harness.client.post("/api/keys", json={})
    assert full.status_code == 409 and "2 active keys" in full.text
    # The leaked key filled the cap; the admin still makes a key for the owner.
    for _ in range(2):
        await harness.admin_key("alice")
    harness.caller.key = None
    listing = (await harness.client.get("/admin/keys", params={"owner": "alice"})).json()
    assert len(listing["items"]) == 4


async def test_a_refusal_shows_the_numbers_as_they_are(harness: Harness) -> None:
    maker = await harness.admin_key("alice", rate=2, burst=2)
    await harness.as_key(maker["secret"])
    response = await harness.client.post("/api/keys", json={"rate": 2.0000001})
    assert response.status_code == 403
    assert response.json()["error"]["message"] == "rate: 2.0000001 is more than this key's own 2"


async def test_repeated_model_names_are_named_once(harness: Harness) -> None:
    created = await harness.admin_key("alice", models=["echo", "echo", "small"])
    assert created["models"] == ["echo", "small"]


async def test_a_key_creates_a_key_with_less_or_the_same(harness: Harness) -> None:
    maker = await harness.admin_key("alice", rate=5, burst=10, max_streams=2, priority=3)
    await harness.as_key(maker["secret"])
    same = await harness.client.post("/api/keys", json={"label": "ci"})
    assert same.status_code == 201, same.text
    body = flat(same)
    assert body["owner_id"] == "alice" and body["created_by"] == maker["id"]
    assert (body["rate"], body["burst"], body["max_streams"], body["priority"]) == (5.0, 10, 2, 3)
    less = await harness.client.post(
        "/api/keys", json={"rate": 1, "burst": 1, "max_streams": 1, "priority": 9}
    )
    assert less.status_code == 201, less.text
    assert await harness.cache.lookup(flat(less)["secret"]) is not None


@pytest.mark.parametrize(
    ("asked", "field"),
    [
        ({"rate": 5.5}, "rate"),
        ({"burst": 11}, "burst"),
        ({"max_streams": 3}, "max_streams"),
        ({"priority": 0}, "priority"),
        ({"owner": "bob"}, "owner"),
        ({"models": ["echo", "small"]}, "models"),
        ({"models": None}, "models"),
    ],
)
async def test_a_key_cannot_create_a_key_with_more_than_it_has(
    harness: Harness, asked: dict[str, Any], field: str
) -> None:
    maker = await harness.admin_key(
        "alice", rate=5, burst=10, max_streams=2, priority=3, models=["echo"]
    )
    await harness.as_key(maker["secret"])
    response = await harness.client.post("/api/keys", json=asked)
    assert response.status_code == 403, response.text
    error = response.json()["error"]
    assert error["code"] == "forbidden" and error["message"].startswith(f"{field}:")
    listing = (await harness.client.get("/api/keys")).json()
    assert [key["id"] for key in listing["items"]] == [maker["id"]]


async def test_a_minted_key_cannot_mint_its_way_back_up(harness: Harness) -> None:
    maker = await harness.admin_key("alice", rate=5, priority=3)
    await harness.as_key(maker["secret"])
    child = flat(await harness.client.post("/api/keys", json={"rate": 1}))
    await harness.as_key(child["secret"])
    assert (await harness.client.post("/api/keys", json={"rate": 5})).status_code == 403
    assert (await harness.client.post("/api/keys", json={"rate": 1})).status_code == 201


async def test_bad_values_are_422_whoever_asks(harness: Harness) -> None:
    maker = await harness.admin_key("alice")
    await harness.as_key(maker["secret"])
    for body in [
        {"rate": 0},
        {"rate": "5"},
        {"burst": True},
        {"burst": 1.5},
        {"priority": 10},
        {"models": []},
        {"models": ["nowhere"]},
        {"label": "x" * 201},
        {"unknown": 1},
    ]:
        response = await harness.client.post("/api/keys", json=body)
        assert response.status_code == 422, (body, response.text)
    harness.caller.key = None
    for body in [{}, {"owner": ""}, {"owner": " alice"}, {"owner": "a", "models": ["gone"]}]:
        response = await harness.client.post("/admin/keys", json=body)
        assert response.status_code == 422, (body, response.text)


async def test_a_key_revokes_its_owners_keys_and_not_anothers(harness: Harness) -> None:
    maker = await harness.admin_key("alice")
    bobs = await harness.admin_key("bob")
    await harness.as_key(maker["secret"])
    other = await harness.client.delete(f"/api/keys/{bobs['id']}")
    assert other.status_code == 404
    assert await harness.cache.lookup(bobs["secret"]) is not None
    spare = flat(await harness.client.post("/api/keys", json={}))
    assert await harness.cache.lookup(spare["secret"]) is not None
    revoked = await harness.client.delete(f"/api/keys/{spare['id']}")
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    assert await harness.cache.lookup(spare["secret"]) is None


async def test_without_a_key_the_own_routes_point_to_the_admin_ways(harness: Harness) -> None:
    harness.caller.key = None
    for method, path in [("GET", "/api/keys"), ("POST", "/api/keys"), ("DELETE", "/api/keys/k")]:
        response = await harness.client.request(method, path, json={} if method == "POST" else None)
        assert response.status_code == 403, (method, response.text)
        message = response.json()["error"]["message"]
        assert "/admin/keys" in message and "chatkeep keys" in message


async def test_the_answers_are_documented(harness: Harness) -> None:
    document = (await harness.client.get("/openapi.json")).json()
    schemas = document["components"]["schemas"]
    assert {"CreatedKeyAnswer", "KeyAnswer", "KeyPage", "NewKey", "NewAdminKey"} <= set(schemas)
    assert set(schemas["CreatedKeyAnswer"]["properties"]) == {"secret", "key"}
    assert "secret" not in schemas["KeyAnswer"]["properties"]
    create = document["paths"]["/api/keys"]["post"]["responses"]
    assert {"201", "403", "422"} <= set(create)


# -- through the whole app: the real auth layer in front ---------------------------------

ADMIN = "admin-" + "k" * 32


async def test_keys_made_over_http_work_and_stop_at_once_through_the_app(
    make_client: ClientFactory,
) -> None:
    client = await make_client(auth="keys", admin_token=ADMIN)
    admin = {"authorization": f"Bearer {ADMIN}"}
    made = await client.post("/admin/keys", json={"owner": "alice", "rate": 50}, headers=admin)
    assert made.status_code == 201, made.text
    parent = {"authorization": f"Bearer {made.json()['secret']}"}

    asked_more = await client.post("/api/keys", json={"rate": 51}, headers=parent)
    assert asked_more.status_code == 403
    child = await client.post("/api/keys", json={"label": "ci"}, headers=parent)
    assert child.status_code == 201, child.text
    child_key = child.json()["key"]
    child_auth = {"authorization": f"Bearer {child.json()['secret']}"}
    assert child_key["created_by"] == made.json()["key"]["id"]
    assert (await client.get("/api/conversations", headers=child_auth)).status_code == 200

    revoked = await client.delete(f"/api/keys/{child_key['id']}", headers=parent)
    assert revoked.status_code == 200
    after = await client.get("/api/conversations", headers=child_auth)
    assert after.status_code == 401  # at once: not after the key cache's seconds
    assert (await client.get("/api/keys", headers=admin)).status_code == 403


async def test_with_one_owner_and_no_keys_the_own_routes_say_where_keys_are_made(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/api/keys", json={})
    assert response.status_code == 403
    assert "/admin/keys" in response.json()["error"]["message"]
    listed = await client.get("/admin/keys")  # a direct loopback client, no token set
    assert listed.status_code == 200 and listed.json()["items"] == []


class StillWall:
    """Stands for the ``time`` module inside `limits`: still until the test moves it."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def time(self) -> float:
        return self.now


async def test_keys_minted_over_http_share_their_makers_budget_through_the_app(
    make_client: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    wall = StillWall()
    for module in (limits.storage.memory, limits.strategies, chatkeep.quotas.rate):
        monkeypatch.setattr(module, "time", wall)
    client = await make_client(auth="keys", admin_token=ADMIN)
    admin = {"authorization": f"Bearer {ADMIN}"}
    made = await client.post(
        "/admin/keys",
        json={"owner": "alice", "rate": 2, "burst": 2, "max_streams": 1},
        headers=admin,
    )
    parent = {"authorization": f"Bearer {made.json()['secret']}"}
    children = []
    for _ in range(5):
        wall.now += 10  # the parent's own budget whole again for each mint
        child = await client.post("/api/keys", json={}, headers=parent)
        assert child.status_code == 201, child.text
        children.append({"authorization": f"Bearer {child.json()['secret']}"})
    wall.now += 10
    statuses = [
        (await client.get("/api/conversations", headers=headers)).status_code
        for headers in [*children, parent]
        for _ in range(2)
    ]
    assert statuses.count(200) == 2 and statuses.count(429) == 10
