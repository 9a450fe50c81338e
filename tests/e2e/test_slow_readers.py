"""Many reply streams whose readers don't read: the server's memory stays bounded,
slow readers are cut off rather than buffered, and every reply is still committed."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import psutil
import pytest

from tests.e2e.server import CLEAN_EXIT, ServerProcess

pytestmark = pytest.mark.e2e

STREAMS = 120
WORDS = 2000  # each reply is ~14 KB of text and ~2 000 SSE events
#: The bound this test states: the whole server process, with every stream open.
RSS_BOUND = 200 * 1024 * 1024


async def _open_stream_and_stall(url: str, conversation_id: str) -> asyncio.StreamWriter:
    """Send a streamed request over a raw socket and then read nothing."""
    host, port = url.removeprefix("http://").split(":")
    _reader, writer = await asyncio.open_connection(host, int(port))
    body = json.dumps({"content": " ".join(["word"] * WORDS), "stream": True}).encode()
    writer.write(
        f"POST /api/conversations/{conversation_id}/messages HTTP/1.1\r\n"
        f"Host: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    return writer


async def test_slow_readers_cost_bounded_memory(tmp_path: Path) -> None:
    server = ServerProcess(
        tmp_path / "data",
        env={
            "CHATKEEP_ECHO_DELAY_MS": "1",
            "CHATKEEP_SUBSCRIBER_QUEUE_BYTES": "4096",
            "CHATKEEP_MAX_INFLIGHT_GENERATIONS": str(STREAMS),
        },
    )
    server.start()
    process = psutil.Process(server.pid)
    peak = 0
    writers: list[asyncio.StreamWriter] = []
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            ids = [
                (await client.post("/api/conversations", json={})).json()["id"]
                for _ in range(STREAMS)
            ]
            writers = [await _open_stream_and_stall(server.url, cid) for cid in ids]

            async def all_committed() -> bool:
                for cid in ids:
                    body = (await client.get(f"/api/conversations/{cid}")).json()
                    if body["message_count"] < 2:
                        return False
                return True

            async with asyncio.timeout(120):  # must not fire
                while True:
                    peak = max(peak, process.memory_info().rss)
                    if await all_committed():
                        break
                    await asyncio.sleep(0.2)
            peak = max(peak, process.memory_info().rss)
            for cid in ids:
                history = (await client.get(f"/api/conversations/{cid}/messages")).json()
                reply = history["items"][-1]
                assert reply["status"] == "complete"
                assert reply["content"].count("word") == WORDS
            stats = (await client.get("/admin/stats")).json()
    finally:
        for writer in writers:
            writer.close()
        assert server.stop() in CLEAN_EXIT
    assert peak < RSS_BOUND, f"peak RSS {peak / 2**20:.1f} MiB"
    assert stats["streams"]["running"] == 0
