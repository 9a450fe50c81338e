"""The conversation endpoints: create, list, get, update, delete, history."""

from __future__ import annotations

import httpx

from tests.api.conftest import ClientFactory


async def _create(client: httpx.AsyncClient, **body: object) -> dict[str, object]:
    response = await client.post("/api/conversations", json=body)
    assert response.status_code == 201, response.text
    created: dict[str, object] = response.json()
    return created


async def test_create_returns_the_conversation(client: httpx.AsyncClient) -> None:
    body = await _create(client, title="hi", system_prompt="be kind", metadata={"a": 1})
    assert body["title"] == "hi"
    assert body["model"] == "echo"
    assert body["status"] == "active"
    assert body["message_count"] == 0
    assert body["metadata"] == {"a": 1}
    assert str(body["id"]).startswith("conv_")


async def test_create_with_unknown_model_is_422(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/conversations", json={"model": "gpt-nope"})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "unknown_model"
    assert "gpt-nope" in response.json()["error"]["message"]


async def test_create_rejects_unknown_fields_and_bad_types(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/conversations", json={"titel": "typo"})
    assert response.status_code == 422
    assert "titel" in response.json()["error"]["message"]
    response = await client.post("/api/conversations", json={"metadata": [1, 2]})
    assert response.status_code == 422
    assert "metadata" in response.json()["error"]["message"]
    response = await client.post(
        "/api/conversations", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422


async def test_create_rejects_oversize_title_and_metadata(make_client: ClientFactory) -> None:
    client = await make_client(max_title_chars=10, max_metadata_bytes=32)
    response = await client.post("/api/conversations", json={"title": "x" * 11})
    assert response.status_code == 422 and "title" in response.json()["error"]["message"]
    response = await client.post("/api/conversations", json={"metadata": {"k": "v" * 40}})
    assert response.status_code == 422 and "metadata" in response.json()["error"]["message"]


async def test_get_unknown_conversation_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/conversations/conv_nope")
    assert response.status_code == 404
    assert response.json() == {
        "error": {"code": "not_found", "message": "conversation conv_nope not found"}
    }


async def test_get_shows_counts_activity_and_usage(client: httpx.AsyncClient) -> None:
    created = await _create(client)
    await client.post(f"/api/conversations/{created['id']}/messages", json={"content": "hi you"})
    body = (await client.get(f"/api/conversations/{created['id']}")).json()
    assert body["message_count"] == 2
    assert body["last_activity"] >= body["created_at"]
    assert body["usage"]["completion_tokens"] > 0
    assert body["usage"]["total_tokens"] == (
        body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
    )


async def test_list_pages_through_everything_newest_first(client: httpx.AsyncClient) -> None:
    ids = [(await _create(client, title=str(n)))["id"] for n in range(5)]
    seen: list[object] = []
    url = "/api/conversations?limit=2"
    while True:
        body = (await client.get(url)).json()
        seen.extend(item["id"] for item in body["items"])
        if body["next_cursor"] is None:
            break
        url = f"/api/conversations?limit=2&cursor={body['next_cursor']}"
    assert seen == list(reversed(ids))


async def test_list_limit_is_capped_and_validated(make_client: ClientFactory) -> None:
    client = await make_client(max_page_size=3)
    for _ in range(4):
        await _create(client)
    body = (await client.get("/api/conversations?limit=1000")).json()
    assert len(body["items"]) == 3 and body["next_cursor"] is not None
    assert (await client.get("/api/conversations?limit=0")).status_code == 422
    assert (await client.get("/api/conversations?cursor=garbage")).status_code == 422
    assert (await client.get("/api/conversations?status=deleted")).status_code == 422


async def test_patch_renames_archives_and_filters(client: httpx.AsyncClient) -> None:
    created = await _create(client, title="old", metadata={"x": 1})
    other = await _create(client)
    url = f"/api/conversations/{created['id']}"
    body = (await client.patch(url, json={"title": "new", "status": "archived"})).json()
    assert (body["title"], body["status"], body["metadata"]) == ("new", "archived", {"x": 1})
    archived = (await client.get("/api/conversations?status=archived")).json()
    assert [c["id"] for c in archived["items"]] == [created["id"]]
    active = (await client.get("/api/conversations?status=active")).json()
    assert [c["id"] for c in active["items"]] == [other["id"]]
    assert (await client.patch(url, json={"status": "gone"})).status_code == 422
    assert (await client.patch(url, json={"status": None})).status_code == 422
    assert (await client.patch("/api/conversations/conv_x", json={"title": "a"})).status_code == 404


async def test_delete_then_404(client: httpx.AsyncClient) -> None:
    created = await _create(client)
    url = f"/api/conversations/{created['id']}"
    await client.post(f"{url}/messages", json={"content": "x"})
    response = await client.delete(url)
    assert response.status_code == 204 and response.content == b""
    assert (await client.get(url)).status_code == 404
    assert (await client.get(f"{url}/messages")).status_code == 404
    assert (await client.delete(url)).status_code == 404


async def test_history_pages_forward_and_backward(client: httpx.AsyncClient) -> None:
    created = await _create(client)
    url = f"/api/conversations/{created['id']}/messages"
    for n in range(3):
        await client.post(url, json={"content": f"m{n}"})
    first = (await client.get(f"{url}?limit=4")).json()
    assert [m["seq"] for m in first["items"]] == [1, 2, 3, 4]
    assert first["next_cursor"] == "4"
    rest = (await client.get(f"{url}?limit=4&after=4")).json()
    assert [m["seq"] for m in rest["items"]] == [5, 6] and rest["next_cursor"] is None
    latest = (await client.get(f"{url}?limit=2&before=7")).json()
    assert [m["seq"] for m in latest["items"]] == [5, 6] and latest["next_cursor"] == "5"
    item = first["items"][0]
    assert set(item) >= {"id", "seq", "role", "content", "status", "created_at"}
    assert (item["role"], item["content"], item["status"]) == ("user", "m0", "complete")
    assert (await client.get(f"{url}?after=-1")).status_code == 422
    assert (await client.get("/api/conversations/conv_x/messages")).status_code == 404


async def test_unknown_route_is_json_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/nothing-here")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


async def test_oversize_body_is_413(make_client: ClientFactory) -> None:
    client = await make_client(max_body_bytes=2048)
    response = await client.post("/api/conversations", json={"title": "x" * 4096})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


async def test_oversize_chunked_body_is_413(make_client: ClientFactory) -> None:
    client = await make_client(max_body_bytes=2048)

    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(10):
            yield b'{"title": "' + b"x" * 500

    response = await client.post(
        "/api/conversations", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413


async def test_health(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"]["storage"] == "ok"


async def test_openapi_docs_served(client: httpx.AsyncClient) -> None:
    assert (await client.get("/docs")).status_code == 200
    spec = (await client.get("/openapi.json")).json()
    assert "/api/conversations/{conversation_id}/messages" in spec["paths"]
