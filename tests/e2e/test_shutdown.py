"""SIGTERM while a reply is being generated: the reply is stored, never left open."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import sse_events
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


async def _read_stream(
    client: httpx.AsyncClient, cid: str, words: int, started: asyncio.Event
) -> str:
    """Send a streamed message and return the whole SSE body the client received."""
    body: list[str] = []
    async with client.stream(
        "POST",
        f"/api/conversations/{cid}/messages",
        json={"content": " ".join(["w"] * words), "stream": True},
    ) as response:
        async for chunk in response.aiter_text():
            body.append(chunk)
            if "event: delta" in chunk:
                started.set()
    return "".join(body)


async def test_sigterm_ends_every_stream_with_a_final_event(tmp_path: Path) -> None:
    """Replies that finish within the grace end with ``done``; the others with ``error``
    (code ``shutdown``, a ``retry:`` hint), and every one of them is stored."""
    data = tmp_path / "data"
    env = {"CHATKEEP_ECHO_DELAY_MS": "50", "CHATKEEP_SHUTDOWN_GRACE_SECONDS": "3"}
    server = ServerProcess(data, env=env)
    server.start()
    short, long = 30, 10  # ~0.5 s of reply each; ~20 s each, far past the grace
    try:
        limits = httpx.Limits(max_connections=short + long + 5)
        async with httpx.AsyncClient(base_url=server.url, timeout=60, limits=limits) as client:
            cids = [
                (await client.post("/api/conversations", json={})).json()["id"]
                for _ in range(short + long)
            ]
            started = [asyncio.Event() for _ in cids]
            readers = [
                asyncio.create_task(_read_stream(client, cid, 10 if n < short else 400, ev))
                for n, (cid, ev) in enumerate(zip(cids, started, strict=True))
            ]
            await asyncio.wait_for(asyncio.gather(*(ev.wait() for ev in started)), 30)
            code = await asyncio.to_thread(server.stop)
            bodies = await asyncio.wait_for(asyncio.gather(*readers), 30)
    finally:
        server.kill()
    assert code in CLEAN_EXIT
    finals = [sse_events(body)[-1] for body in bodies]
    assert [f["event"] for f in finals[:short]] == ["done"] * short
    for final in finals[short:]:
        assert final["event"] == "error"
        assert json.loads(final["data"])["error"]["code"] == "shutdown"
        assert int(final["retry"]) > 0

    again = ServerProcess(data)
    again.start()
    try:
        async with httpx.AsyncClient(base_url=again.url, timeout=30) as client:
            statuses = []
            for cid in cids:
                items = (await client.get(f"/api/conversations/{cid}/messages")).json()["items"]
                statuses.append(items[-1]["status"])
    finally:
        again.stop()
    assert statuses == ["complete"] * short + ["incomplete"] * long


async def _send_streamed(client: httpx.AsyncClient, cid: str) -> tuple[int, str]:
    async with client.stream(
        "POST",
        f"/api/conversations/{cid}/messages",
        json={"content": " ".join(["w"] * 400), "stream": True},
    ) as response:
        return response.status_code, "".join([chunk async for chunk in response.aiter_text()])


async def test_sigterm_refuses_queued_sends_instead_of_starting_them(tmp_path: Path) -> None:
    """Sends waiting for a slot when the stop comes are refused (503 ``shutdown``), not
    started after the grace, when nothing would stop them before the connections close."""
    env = {
        "CHATKEEP_ECHO_DELAY_MS": "100",
        "CHATKEEP_SHUTDOWN_GRACE_SECONDS": "1",
        "CHATKEEP_MAX_INFLIGHT_GENERATIONS": "2",
    }
    server = ServerProcess(tmp_path / "data", env=env)
    server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            cids = [
                (await client.post("/api/conversations", json={})).json()["id"] for _ in range(4)
            ]
            senders = [asyncio.create_task(_send_streamed(client, cid)) for cid in cids]
            for _ in range(600):  # a process, not an event: its state is polled, bounded
                if (await client.get("/admin/stats")).json()["generations"]["queued"] >= 2:
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the sends never queued")
            code = await asyncio.to_thread(server.stop)
            answers = await asyncio.wait_for(asyncio.gather(*senders), 30)
    finally:
        server.kill()
    assert code in CLEAN_EXIT
    streamed = [body for status, body in answers if status == 200]
    refused = [body for status, body in answers if status != 200]
    assert len(streamed) == 2 and len(refused) == 2
    for body in streamed:
        final = sse_events(body)[-1]
        assert final["event"] == "error" and '"shutdown"' in final["data"]
    for body in refused:
        assert json.loads(body)["error"]["code"] == "shutdown"


async def test_sigterm_ends_stateless_answers_readably(tmp_path: Path) -> None:
    """A /v1 answer still running at the end of the grace ends with an error the client
    can read: an error event for a stream, a 503 for a JSON answer; never a cut."""
    env = {"CHATKEEP_ECHO_DELAY_MS": "100", "CHATKEEP_SHUTDOWN_GRACE_SECONDS": "1"}
    server = ServerProcess(tmp_path / "data", env=env)
    server.start()
    words = " ".join(["slow"] * 300)  # 30 s of reply
    body = {"model": "echo", "messages": [{"role": "user", "content": words}]}

    async def streamed(client: httpx.AsyncClient, started: asyncio.Event) -> str:
        async with client.stream(
            "POST", "/v1/chat/completions", json={**body, "stream": True}
        ) as response:
            chunks = []
            async for chunk in response.aiter_text():
                chunks.append(chunk)
                started.set()
            return "".join(chunks)

    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            started = asyncio.Event()
            stream = asyncio.create_task(streamed(client, started))
            answer = asyncio.create_task(client.post("/v1/chat/completions", json=body))
            await asyncio.wait_for(started.wait(), 30)
            code = await asyncio.to_thread(server.stop)
            text, json_answer = await asyncio.wait_for(asyncio.gather(stream, answer), 30)
    finally:
        server.kill()
    assert code in CLEAN_EXIT
    last = [line for line in text.splitlines() if line.startswith("data:")][-1]
    assert json.loads(last.removeprefix("data:"))["error"]["code"] == "shutdown"
    assert json_answer.status_code == 503
    assert json_answer.json()["error"]["code"] == "shutdown"
