"""SIGTERM while a reply is being generated: the reply is stored, never left open."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from tests.e2e.server import CLEAN_EXIT, ServerProcess

pytestmark = pytest.mark.e2e


async def test_sigterm_stores_open_reply_as_incomplete(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {"CHATKEEP_ECHO_DELAY_MS": "100", "CHATKEEP_SHUTDOWN_GRACE_SECONDS": "0.5"}
    server = ServerProcess(data, env=env)
    server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            cid = (await client.post("/api/conversations", json={})).json()["id"]
            words = " ".join(["slow"] * 200)  # 20 s of reply at 100 ms a word
            async with client.stream(
                "POST",
                f"/api/conversations/{cid}/messages",
                json={"content": words, "stream": True},
            ) as response:
                async for line in response.aiter_lines():
                    if line.startswith("event: delta"):
                        break  # the reply is under way
                code = await asyncio.to_thread(server.stop)
    finally:
        server.kill()
    assert code in CLEAN_EXIT

    again = ServerProcess(data)
    again.start()
    try:
        async with httpx.AsyncClient(base_url=again.url, timeout=30) as client:
            items = (await client.get(f"/api/conversations/{cid}/messages")).json()["items"]
    finally:
        again.stop()
    assert [m["role"] for m in items] == ["user", "assistant"]
    reply = items[1]
    assert reply["status"] == "incomplete"
    assert "shut down" in reply["reason"]
    assert reply["content"].startswith("echo: slow")
