"""The BOLA matrix: two owners, every route against the other owner's ids.

Generated from the route table, so a route added later is checked without anyone
remembering to: a path parameter the matrix cannot fill, or a body-less create it has no
body for, fails here until it is added, with its owner check.

Bob, holding a valid key of his own, tries every route on Alice's things, once while her
reply is being generated and once after it ended. Every one answers ``404`` (never ``403``
or ``409``, which would confirm the id exists); admin routes answer ``403`` to a user key;
everything but the probes and docs answers ``401`` without a key; lists and creates never
show Alice's ids; and afterwards Alice's conversation is exactly as it was.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from chatkeep.api.middleware.auth import PUBLIC_PATHS
from chatkeep.app import HOT_ROUTES
from tests.api.conftest import ClientFactory, GatedProvider
from tests.api.test_stack import _app, _routes

ADMIN = "admin-" + "t" * 32

#: A valid body for each route that takes one, so that a 404 comes from the owner check
#: and not from a 422 before it. Path parameters are filled from `World.ids`; a callable
#: makes its body from them.
BODIES: dict[tuple[str, str], Any] = {
    ("POST", "/api/conversations"): {"model": "echo", "title": "bob's"},
    ("PATCH", "/api/conversations/{conversation_id}"): {"title": "taken over"},
    ("POST", "/api/conversations/{conversation_id}/messages"): {"content": "hello"},
    ("POST", "/api/conversations/{conversation_id}/cancel"): None,
    ("POST", "/v1/chat/completions"): {
        "model": "echo",
        "messages": [{"role": "user", "content": "hi"}],
    },
    ("POST", "/api/keys"): {"label": "bob's second key"},
    ("POST", "/admin/keys"): {"owner": "bob"},
    ("POST", "/admin/memory/profile"): {"seconds": 0.01},
    # Ids that arrive in a body: a document naming Alice's conversation.
    ("POST", "/api/conversations/import"): lambda ids: {
        "format": "chatkeep.export",
        "version": 1,
        "exported_at": 1.0,
        "conversations": [
            {
                "id": ids["conversation_id"],
                "title": "bob's copy",
                "model": "echo",
                "status": "active",
                "created_at": 1.0,
                "updated_at": 1.0,
                "last_activity": 1.0,
                "usage": {"prompt_tokens": 0, "completion_tokens": 0},
                "summary": None,
                "summary_through_seq": 0,
                "metadata": {},
                "system_prompt": None,
                "messages": [],
            }
        ],
    },
}


@dataclass
class World:
    client: httpx.AsyncClient
    alice: dict[str, str]
    bob: dict[str, str]
    #: Path parameter → Alice's id of that kind.
    ids: dict[str, str]
    #: Alice's conversation as she sees it before Bob starts.
    before: dict[str, Any]


def _key_headers(secret: str) -> dict[str, str]:
    return {"authorization": f"Bearer {secret}"}


async def _make_key(client: httpx.AsyncClient, owner: str) -> tuple[str, str]:
    answer = await client.post("/admin/keys", json={"owner": owner}, headers=_key_headers(ADMIN))
    assert answer.status_code == 201, answer.text
    body = answer.json()
    return body["secret"], body["key"]["id"]


async def _world(make_client: ClientFactory, *, live: bool, gated: GatedProvider) -> World:
    client = await make_client(auth="keys", admin_token=ADMIN)
    alice_secret, alice_key = await _make_key(client, "alice")
    bob_secret, _ = await _make_key(client, "bob")
    alice = _key_headers(alice_secret)
    model = "gated" if live else "echo"
    created = await client.post(
        "/api/conversations", json={"model": model, "title": "alice's"}, headers=alice
    )
    assert created.status_code == 201, created.text
    conversation_id = created.json()["id"]
    if live:
        asyncio.create_task(  # noqa: RUF006 - ended by the fixture's release
            client.post(
                f"/api/conversations/{conversation_id}/messages",
                json={"content": "a secret question"},
                headers=alice,
            )
        )
        await asyncio.wait_for(gated.started.wait(), 5)
    else:
        sent = await client.post(
            f"/api/conversations/{conversation_id}/messages",
            json={"content": "a secret question"},
            headers=alice,
        )
        assert sent.status_code == 200, sent.text
    before = (await client.get(f"/api/conversations/{conversation_id}", headers=alice)).json()
    return World(
        client=client,
        alice=alice,
        bob=_key_headers(bob_secret),
        ids={"conversation_id": conversation_id, "key_id": alice_key},
        before=before,
    )


def _route_table(client: httpx.AsyncClient) -> list[tuple[str, str]]:
    app = _app(client)
    table = {
        (method, route.path)
        for route in _routes(app)
        for method in route.methods or ()
        if method != "HEAD" and route.path not in PUBLIC_PATHS
    }
    return sorted(table | set(HOT_ROUTES))


def _fill(path: str, ids: dict[str, str]) -> str:
    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        assert name in ids, (
            f"{path}: the BOLA matrix has no id for '{name}'; add one to World.ids "
            "(and make sure the route checks the owner)"
        )
        return ids[name]

    return re.sub(r"\{([^}]+)\}", one, path)


def _body(method: str, template: str, ids: dict[str, str]) -> Any:
    """The body `_ask` sends: from `BODIES`, else ``{}`` for methods that take one."""
    if (method, template) not in BODIES:
        return {} if method in ("POST", "PATCH", "PUT") else None
    body = BODIES[(method, template)]
    return body(ids) if callable(body) else body


async def _ask(
    client: httpx.AsyncClient,
    method: str,
    template: str,
    ids: dict[str, str],
    headers: dict[str, str],
) -> httpx.Response:
    path = _fill(template, ids)
    body = _body(method, template, ids)
    return await client.request(method, path, json=body, headers=headers, timeout=httpx.Timeout(10))


@pytest.fixture(params=["live", "finished"])
async def world(
    request: pytest.FixtureRequest, make_client: ClientFactory, gated: GatedProvider
) -> Any:
    live = request.param == "live"
    the_world = await _world(make_client, live=live, gated=gated)
    yield the_world
    if live:
        gated.release("the answer", None)
        await asyncio.sleep(0)


async def test_another_owners_ids_are_404_on_every_route(world: World) -> None:
    client = world.client
    secret_things = [*world.ids.values(), "a secret question"]
    for method, template in _route_table(client):
        answer = await _ask(client, method, template, world.ids, world.bob)
        where = f"{method} {template} → {answer.status_code} {answer.text[:200]}"
        if template.startswith("/admin") or template == "/metrics":
            assert answer.status_code == 403, where
        elif "{" in template:
            assert answer.status_code == 404, where
            assert answer.json()["error"]["code"] == "not_found", where
        else:
            assert answer.status_code < 400, where
            # Bob may hear back an id he sent himself, never anything of Alice's.
            sent = str(_body(method, template, world.ids))
            for thing in secret_things:
                assert thing not in answer.text or thing in sent, where
    after = (
        await client.get(f"/api/conversations/{world.ids['conversation_id']}", headers=world.alice)
    ).json()
    assert after == world.before


async def test_every_route_but_probes_and_docs_needs_a_key(world: World) -> None:
    client = world.client
    for method, template in _route_table(client):
        answer = await _ask(client, method, template, world.ids, {})
        assert answer.status_code == 401, f"{method} {template} → {answer.status_code}"
        assert answer.json()["error"]["code"] == "unauthorized"
    for path in ("/healthz", "/readyz", "/openapi.json"):
        assert (await client.get(path)).status_code == 200, path


async def test_lists_show_each_owner_only_their_own(world: World) -> None:
    client = world.client
    created = await client.post("/api/conversations", json={"model": "echo"}, headers=world.bob)
    bobs = created.json()["id"]
    for who, owner, mine, theirs in (
        (world.alice, "alice", world.ids["conversation_id"], bobs),
        (world.bob, "bob", bobs, world.ids["conversation_id"]),
    ):
        listed = (await client.get("/api/conversations", headers=who)).json()["items"]
        assert [c["id"] for c in listed] == [mine]
        keys = (await client.get("/api/keys", headers=who)).json()["items"]
        assert {k["owner_id"] for k in keys} == {owner}
        assert theirs not in (await client.get("/api/conversations", headers=who)).text
