"""kill -9 the server under load: every acknowledged message is there, exactly once."""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.e2e.server import CLEAN_EXIT, ServerProcess

pytestmark = pytest.mark.e2e

ROUNDS = 4
SENDERS = 8


@dataclass
class Acknowledged:
    """What the clients were told was stored."""

    user: dict[str, str] = field(default_factory=dict)  # client_message_id → user message id
    assistant: dict[str, str] = field(default_factory=dict)  # user message id → reply id


async def _sender(
    client: httpx.AsyncClient, conversation_id: str, tag: str, acked: Acknowledged, streamed: bool
) -> None:
    url = f"/api/conversations/{conversation_id}/messages"
    n = 0
    while True:
        n += 1
        client_id = f"{tag}-{n}"
        try:
            if streamed:
                async with client.stream(
                    "POST",
                    url,
                    json={
                        "content": f"m {client_id}",
                        "client_message_id": client_id,
                        "stream": True,
                    },
                ) as response:
                    if response.status_code != 200:
                        continue
                    event = None
                    async for line in response.aiter_lines():
                        if line.startswith("event:"):
                            event = line.split(":", 1)[1].strip()
                        elif line.startswith("data:") and event in ("message", "done"):
                            data = json.loads(line.split(":", 1)[1])
                            if event == "message":
                                acked.user[client_id] = data["id"]
                            else:
                                acked.assistant[data["reply_to"]] = data["id"]
            else:
                response = await client.post(
                    url, json={"content": f"m {client_id}", "client_message_id": client_id}
                )
                if response.status_code == 200:
                    body = response.json()
                    acked.user[client_id] = body["user_message"]["id"]
                    acked.assistant[body["user_message"]["id"]] = body["assistant_message"]["id"]
        except (httpx.TransportError, json.JSONDecodeError):
            return  # the server died under us


async def _load_until_killed(
    server: ServerProcess, acked: Acknowledged, rng: random.Random
) -> list[str]:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        conversations = []
        for _ in range(SENDERS):
            response = await client.post("/api/conversations", json={"title": "crash"})
            conversations.append(response.json()["id"])
        tasks = [
            asyncio.create_task(_sender(client, cid, f"{cid}-{i}", acked, streamed=i % 2 == 0))
            for i, cid in enumerate(conversations)
        ]
        await asyncio.sleep(rng.uniform(0.3, 1.2))
        server.kill()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
    return conversations


async def _history(client: httpx.AsyncClient, conversation_id: str) -> list[dict[str, object]]:
    items: list[dict[str, object]] = []
    after = 0
    while True:
        page = (
            await client.get(
                f"/api/conversations/{conversation_id}/messages",
                params={"limit": 200, "after": after},
            )
        ).json()
        items.extend(page["items"])
        if page["next_cursor"] is None:
            return items
        after = int(page["next_cursor"])


async def test_acknowledged_messages_survive_kill_9(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    rng = random.Random(20261121)
    acked = Acknowledged()
    all_conversations: list[str] = []
    for _ in range(ROUNDS):
        server = ServerProcess(data_dir, env={"CHATKEEP_ECHO_DELAY_MS": "1"})
        server.start()
        try:
            all_conversations += await _load_until_killed(server, acked, rng)
        finally:
            server.kill()

    assert len(acked.user) > 50, "the load was too light to mean anything"
    server = ServerProcess(data_dir)
    server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            by_client_id: dict[str, list[dict[str, object]]] = {}
            ids: list[object] = []
            replies: dict[object, dict[str, object]] = {}
            for conversation_id in all_conversations:
                history = await _history(client, conversation_id)
                assert [m["seq"] for m in history] == list(range(1, len(history) + 1))
                for message in history:
                    ids.append(message["id"])
                    if message["role"] == "user":
                        by_client_id.setdefault(str(message["client_message_id"]), []).append(
                            message
                        )
                    else:
                        replies[message["reply_to"]] = message
    finally:
        assert server.stop() in CLEAN_EXIT

    assert len(ids) == len(set(ids))
    for client_id, user_id in acked.user.items():
        stored = by_client_id.get(client_id, [])
        assert len(stored) == 1, f"{client_id} stored {len(stored)} times"
        assert stored[0]["id"] == user_id
    for user_id, reply_id in acked.assistant.items():
        assert replies[user_id]["id"] == reply_id
        assert replies[user_id]["status"] == "complete"
    # Recovery closed every reply a kill left open.
    for messages in by_client_id.values():
        assert messages[0]["id"] in replies

    with sqlite3.connect(data_dir / "chatkeep.sqlite3") as raw:
        assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
