"""Export and import over HTTP: a streamed attachment, 404 before any byte, import reports."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest
import yaml

from chatkeep.api.middleware import StackedFastAPI
from chatkeep.api.state import AppState
from chatkeep.domain.records import Conversation, Message
from chatkeep.storage.transfer_store import TransferStore
from tests.api.conftest import ClientFactory


def _app(client: httpx.AsyncClient) -> StackedFastAPI:
    app = client._transport.app  # type: ignore[attr-defined]
    assert isinstance(app, StackedFastAPI)
    return app


async def _transfer_client(make_client: ClientFactory, **overrides: Any) -> httpx.AsyncClient:
    return await make_client(**overrides)


def _store(client: httpx.AsyncClient) -> TransferStore:
    app_state: AppState = _app(client).state.chatkeep
    return app_state.store


@pytest.fixture
async def client(make_client: ClientFactory) -> httpx.AsyncClient:
    return await _transfer_client(make_client)


async def _conversation_with_messages(client: httpx.AsyncClient) -> str:
    created = await client.post("/api/conversations", json={"title": "héllo", "metadata": {"a": 1}})
    cid: str = created.json()["id"]
    for text in ("first", "second ✓"):
        sent = await client.post(
            f"/api/conversations/{cid}/messages", json={"content": text, "client_message_id": text}
        )
        assert sent.status_code == 200, sent.text
    return cid


async def test_export_is_a_json_attachment_with_every_message(client: httpx.AsyncClient) -> None:
    cid = await _conversation_with_messages(client)
    response = await client.get(f"/api/conversations/{cid}/export")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["content-disposition"] == f'attachment; filename="{cid}.json"'
    document = response.json()
    assert (document["format"], document["version"]) == ("chatkeep.export", 1)
    (conversation,) = document["conversations"]
    assert conversation["id"] == cid and conversation["title"] == "héllo"
    history = (await client.get(f"/api/conversations/{cid}/messages")).json()["items"]
    assert [m["id"] for m in conversation["messages"]] == [m["id"] for m in history]
    assert [m["content"] for m in conversation["messages"]][::2] == ["first", "second ✓"]


async def test_export_as_yaml(client: httpx.AsyncClient) -> None:
    cid = await _conversation_with_messages(client)
    response = await client.get(f"/api/conversations/{cid}/export", params={"format": "yaml"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/yaml"
    assert response.headers["content-disposition"].endswith(f'filename="{cid}.yaml"')
    document = yaml.safe_load(response.text)
    assert [len(c["messages"]) for c in document["conversations"]] == [4]


async def test_export_of_another_owners_conversation_is_a_plain_404(
    client: httpx.AsyncClient,
) -> None:
    theirs = Conversation("conv_theirs", "bob", None, "echo", None, {}, "active", 1.0, 1.0, 1.0, 1)
    message = Message("msg_theirs", "conv_theirs", 1, "user", "secret", "complete", 1.0)
    assert await _store(client).import_conversation("bob", theirs, [message])
    for cid in ("conv_theirs", "conv_nobody"):
        response = await client.get(f"/api/conversations/{cid}/export")
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/json"
        assert response.json()["error"] == {
            "code": "not_found",
            "message": f"conversation {cid} not found",
        }


async def test_export_in_an_unknown_format_is_422(client: httpx.AsyncClient) -> None:
    cid = await _conversation_with_messages(client)
    response = await client.get(f"/api/conversations/{cid}/export", params={"format": "xml"})
    assert response.status_code == 422
    assert "format" in response.json()["error"]["message"]


async def test_import_creates_then_skips(make_client: ClientFactory) -> None:
    source = await _transfer_client(make_client)
    cid = await _conversation_with_messages(source)
    exported = (await source.get(f"/api/conversations/{cid}/export")).content
    target = await _transfer_client(make_client)
    first = await target.post(
        "/api/conversations/import",
        content=exported,
        headers={"content-type": "application/json"},
    )
    assert first.status_code == 200
    assert first.json() == {"created": [cid], "skipped": [], "rejected": []}
    again = await target.post("/api/conversations/import", content=exported)
    assert again.json()["created"] == [] and [s["id"] for s in again.json()["skipped"]] == [cid]
    for url in (f"/api/conversations/{cid}", f"/api/conversations/{cid}/messages"):
        assert (await target.get(url)).json() == (await source.get(url)).json()


async def test_import_reads_yaml(make_client: ClientFactory) -> None:
    source = await _transfer_client(make_client)
    cid = await _conversation_with_messages(source)
    exported = await source.get(f"/api/conversations/{cid}/export", params={"format": "yaml"})
    target = await _transfer_client(make_client)
    response = await target.post(
        "/api/conversations/import",
        content=exported.content,
        headers={"content-type": "application/yaml"},
    )
    assert response.status_code == 200 and response.json()["created"] == [cid]
    # A sent message's idempotency key still replays after the move.
    replay = await target.post(
        f"/api/conversations/{cid}/messages",
        json={"content": "first", "client_message_id": "first"},
    )
    assert replay.status_code == 200
    assert (await target.get(f"/api/conversations/{cid}")).json()["message_count"] == 4


async def test_import_reports_rejected_conversations_and_why(client: httpx.AsyncClient) -> None:
    theirs = Conversation("conv_theirs", "bob", None, "echo", None, {}, "active", 1.0, 1.0, 1.0)
    assert await _store(client).import_conversation("bob", theirs, [])
    good = {
        "id": "conv_good",
        "model": "echo",
        "status": "active",
        "created_at": 1,
        "updated_at": 1,
        "last_activity": 1,
        "messages": [],
    }
    document = {
        "format": "chatkeep.export",
        "version": 1,
        "exported_at": 1,
        "conversations": [
            good,
            {**good, "id": "conv_theirs"},
            {**good, "id": "conv_bad", "seq": 1},
        ],
    }
    response = await client.post("/api/conversations/import", json=document)
    assert response.status_code == 200
    report = response.json()
    assert report["created"] == ["conv_good"]
    assert [(r["id"], r["index"]) for r in report["rejected"]] == [
        ("conv_theirs", 1),
        ("conv_bad", 2),
    ]
    assert "not available" in report["rejected"][0]["reason"]
    assert "seq: not a field of the format" in report["rejected"][1]["reason"]


@pytest.mark.parametrize(
    ("body", "content_type", "said"),
    [
        (b"{not json", "application/json", "not JSON"),
        (b"[]", "application/json", "not a chatkeep export"),
        (b'{"format": "chatkeep.export", "version": 7}', "application/json", "newer chatkeep"),
        (b"a: [1, 2", "application/yaml", "not YAML"),
        (b"a: &x 1\nb: *x", "application/x-yaml", "aliases"),
        (b'{"format": "chatkeep.export", "format": "x"}', "application/json", '"format" is given'),
        (b"a: 1\nb: 2\na: 3\n", "application/yaml", '"a" is given twice in one mapping (line 3)'),
        (b'{"a": NaN}', "application/json", "NaN is not a number"),
    ],
)
async def test_import_of_something_that_is_no_document_is_422(
    client: httpx.AsyncClient, body: bytes, content_type: str, said: str
) -> None:
    response = await client.post(
        "/api/conversations/import", content=body, headers={"content-type": content_type}
    )
    assert response.status_code == 422
    assert said in response.json()["error"]["message"]


async def test_import_over_the_body_limit_is_413(make_client: ClientFactory) -> None:
    client = await _transfer_client(make_client, max_body_bytes=1024)
    document = {"format": "chatkeep.export", "version": 1, "exported_at": 1, "pad": "x" * 2000}
    response = await client.post("/api/conversations/import", content=orjson.dumps(document))
    assert response.status_code == 413


async def test_import_route_is_not_taken_for_a_conversation_id(client: httpx.AsyncClient) -> None:
    # GET and PATCH …/import are the conversation routes' (an id "import" that is nobody's).
    assert (await client.get("/api/conversations/import")).status_code == 404
    document = {"format": "chatkeep.export", "version": 1, "exported_at": 1, "conversations": []}
    response = await client.post("/api/conversations/import", json=document)
    assert response.json() == {"created": [], "skipped": [], "rejected": []}


async def test_import_refuses_an_integer_past_64_bits_as_creating_does(
    client: httpx.AsyncClient,
) -> None:
    created = await client.post(
        "/api/conversations",
        content=b'{"metadata": {"x": 1180591620717411303424}}',
        headers={"content-type": "application/json"},
    )
    assert created.status_code == 422
    assert "outside the 64-bit signed range" in created.json()["error"]["message"]
    conversation = (
        b'{"id": "conv_big", "model": "echo", "status": "active", "created_at": 1,'
        b' "updated_at": 1, "last_activity": 1, "messages": [],'
        b' "metadata": {"x": 1180591620717411303424}}'
    )
    document = (
        b'{"format": "chatkeep.export", "version": 1, "exported_at": 1, "conversations": ['
        + conversation
        + b"]}"
    )
    for body, content_type in (
        (document, "application/json"),
        (yaml.safe_dump(yaml.safe_load(document)).encode(), "application/yaml"),
    ):
        response = await client.post(
            "/api/conversations/import", content=body, headers={"content-type": content_type}
        )
        assert response.status_code == 200
        report = response.json()
        assert report["created"] == [], content_type
        (rejected,) = report["rejected"]
        assert "metadata: integer at x is outside the 64-bit signed range" in rejected["reason"]
    assert (await client.get("/api/conversations/conv_big")).status_code == 404
