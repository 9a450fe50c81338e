"""Idempotent sends over HTTP: a retry replays, a reused key never loses a message."""

from __future__ import annotations

import httpx
import pytest


async def _conversation(client: httpx.AsyncClient) -> str:
    cid: str = (await client.post("/api/conversations", json={})).json()["id"]
    return cid


@pytest.mark.parametrize("via", ["body", "header"])
async def test_a_key_reused_for_another_message_is_409_and_stores_nothing(
    client: httpx.AsyncClient, via: str
) -> None:
    cid = await _conversation(client)
    url = f"/api/conversations/{cid}/messages"

    def send(content: str) -> dict[str, object]:
        if via == "body":
            return {"json": {"content": content, "client_message_id": "k"}}
        return {"json": {"content": content}, "headers": {"Idempotency-Key": "k"}}

    first = await client.post(url, **send("the first message"))  # type: ignore[arg-type]
    assert first.status_code == 200
    again = await client.post(url, **send("the first message"))  # type: ignore[arg-type]
    assert again.json() == first.json()
    reused = await client.post(url, **send("a different message"))  # type: ignore[arg-type]
    assert reused.status_code == 409
    assert reused.json()["error"]["code"] == "idempotency_key_reused"
    history = (await client.get(url)).json()["items"]
    assert [m["content"] for m in history if m["role"] == "user"] == ["the first message"]


@pytest.mark.parametrize("key", ["", "   "])
async def test_an_empty_idempotency_key_is_422(client: httpx.AsyncClient, key: str) -> None:
    cid = await _conversation(client)
    response = await client.post(
        f"/api/conversations/{cid}/messages",
        json={"content": "hi"},
        headers={"Idempotency-Key": key},
    )
    assert response.status_code == 422
    assert "Idempotency-Key" in response.json()["error"]["message"]
    assert (await client.get(f"/api/conversations/{cid}")).json()["message_count"] == 0


async def test_a_blank_client_message_id_is_422(client: httpx.AsyncClient) -> None:
    cid = await _conversation(client)
    response = await client.post(
        f"/api/conversations/{cid}/messages", json={"content": "hi", "client_message_id": " "}
    )
    assert response.status_code == 422
    assert "client_message_id" in response.json()["error"]["message"]
