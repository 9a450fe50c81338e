"""A streamed answer whose client leaves gives back what it held at once, not at its end."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from tests.e2e.server import ServerProcess

pytestmark = pytest.mark.e2e

#: 20 s of reply at 100 ms a word; every check below must hold long before that.
WORDS = " ".join(["slow"] * 200)


async def _inflight(client: httpx.AsyncClient) -> int:
    stats = (await client.get("/admin/stats")).json()
    inflight: int = stats["generations"]["inflight"]
    return inflight


@pytest.mark.parametrize("surface", ["/v1/chat/completions", "durable"])
async def test_a_client_that_leaves_a_stream_frees_its_slot(tmp_path: Path, surface: str) -> None:
    env = {"CHATKEEP_ECHO_DELAY_MS": "100", "CHATKEEP_SHUTDOWN_GRACE_SECONDS": "0"}
    server = ServerProcess(tmp_path / "data", env=env)
    server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            if surface == "durable":
                cid = (await client.post("/api/conversations", json={})).json()["id"]
                url, body = f"/api/conversations/{cid}/messages", {"content": WORDS, "stream": True}
            else:
                url = surface
                body = {
                    "model": "echo",
                    "stream": True,
                    "messages": [{"role": "user", "content": WORDS}],
                }
            async with client.stream("POST", url, json=body) as response:
                lines = response.aiter_lines()
                await anext(lines)  # the answer has begun, and is being read
                assert await _inflight(client) == 1
                await lines.aclose()
            # The client has left, 20 s before the end of the reply.
            polls = 20 if surface == "durable" else 100  # 1 s / 5 s
            for _ in range(polls):  # a process, not an event: polled, bounded
                if await _inflight(client) == 0:
                    break
                await asyncio.sleep(0.05)
            freed = await _inflight(client) == 0
    finally:
        server.stop()
    if surface == "durable":
        # A durable reply belongs to the server: it goes on (and is stored) without readers.
        assert not freed
    else:
        assert freed
