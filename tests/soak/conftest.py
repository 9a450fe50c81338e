"""A small aiohttp server that speaks chatkeep's conversation API and OpenAI chat completions.

It stands in for the server under test so the soak harness is tested on its own: it
answers like chatkeep (201 on create, JSON or SSE replies, ``409`` when one conversation
gets two sends at once), injects faults on every n-th send (``503``, a cut stream, an
``error`` event, a stall), and serves ``/metrics`` with a resident memory gauge that grows
by ``leak_per_request`` bytes per reply, so a leak is something the test dials in rather
than waits for.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import orjson
import pytest
from aiohttp import web

BASE_RSS = 50 * 1024 * 1024


@dataclass
class Mimic:
    """The server's state and knobs."""

    leak_per_request: int = 0
    pieces: int = 3
    faults: dict[str, int] = field(default_factory=dict)
    """Fault name (``503``, ``cut``, ``error``, ``stall``) -> inject on every n-th send."""
    conversations: dict[str, int] = field(default_factory=dict)
    busy: set[str] = field(default_factory=set)
    sends: int = 0
    replies: int = 0
    conflicts: int = 0
    url: str = ""
    unstall: asyncio.Event = field(default_factory=asyncio.Event)

    def fault(self, name: str) -> bool:
        every = self.faults.get(name)
        return every is not None and self.sends % every == 0

    async def stall_if_asked(self) -> None:
        if self.fault("stall"):
            # Held until the fixture lets go at teardown: the client must time out first.
            await self.unstall.wait()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/api/conversations", self.create)
        app.router.add_post("/api/conversations/{id}/messages", self.send)
        app.router.add_post("/v1/chat/completions", self.complete)
        app.router.add_get("/metrics", self.metrics)
        return app

    async def create(self, request: web.Request) -> web.Response:
        body = await request.json()
        conversation_id = uuid.uuid4().hex
        self.conversations[conversation_id] = 0
        return web.json_response({"id": conversation_id, "title": body.get("title")}, status=201)

    async def send(self, request: web.Request) -> web.StreamResponse:
        conversation_id = request.match_info["id"]
        if conversation_id not in self.conversations:
            return _error(404, "not_found")
        if conversation_id in self.busy:
            self.conflicts += 1
            return _error(409, "reply_in_progress")
        body = await request.json()
        content = str(body["content"])
        self.sends += 1
        if self.fault("503"):
            return _error(503, "overloaded", headers={"Retry-After": "1"})
        self.busy.add(conversation_id)
        try:
            # Give a second send on the same conversation the chance to collide.
            await asyncio.sleep(0)
            await self.stall_if_asked()
            self.conversations[conversation_id] += 2
            self.replies += 1
            user = {"id": uuid.uuid4().hex, "role": "user", "content": content}
            assistant = {"id": uuid.uuid4().hex, "role": "assistant", "content": "ok"}
            if not body.get("stream"):
                return web.json_response({"user_message": user, "assistant_message": assistant})
            response = await _sse_response(request)
            await _event(response, "message", user)
            for index in range(self.pieces):
                await _event(response, "delta", {"text": f"piece{index} "})
            if self.fault("error"):
                error = {"error": {"code": "provider_error", "message": "backend died"}}
                await _event(response, "error", error)
            elif not self.fault("cut"):
                await _event(response, "done", assistant)
            await response.write_eof()
            return response
        finally:
            self.busy.discard(conversation_id)

    async def complete(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.sends += 1
        if self.fault("503"):
            return _error(503, "overloaded")
        await self.stall_if_asked()
        self.replies += 1
        model = body.get("model", "m")
        if not body.get("stream"):
            message = {"role": "assistant", "content": "ok"}
            return web.json_response(
                {
                    "id": "cmpl",
                    "object": "chat.completion",
                    "model": model,
                    "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                }
            )
        response = await _sse_response(request)
        deltas: list[dict[str, str]] = [{"role": "assistant"}]
        deltas += [{"content": f"piece{i} "} for i in range(self.pieces)]
        for delta in deltas:
            chunk = {"id": "c", "model": model, "choices": [{"index": 0, "delta": delta}]}
            await response.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
        if self.fault("error"):
            await response.write(b'data: {"error": {"message": "backend died"}}\n\n')
        elif not self.fault("cut"):
            await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def metrics(self, request: web.Request) -> web.Response:
        rss = BASE_RSS + self.leak_per_request * self.replies
        text = (
            "# HELP chatkeep_process_resident_memory_bytes Resident memory.\n"
            "# TYPE chatkeep_process_resident_memory_bytes gauge\n"
            f"chatkeep_process_resident_memory_bytes {float(rss)!r}\n"
        )
        return web.Response(text=text, content_type="text/plain")


def _error(status: int, code: str, headers: dict[str, str] | None = None) -> web.Response:
    body = {"error": {"code": code, "message": code.replace("_", " ")}}
    return web.json_response(body, status=status, headers=headers)


async def _sse_response(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    return response


async def _event(response: web.StreamResponse, name: str, data: object) -> None:
    await response.write(f"event: {name}\n".encode() + b"data: " + orjson.dumps(data) + b"\n\n")


async def _start(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}"


@pytest.fixture
async def mimic() -> AsyncIterator[Mimic]:
    """A mimic server on a free port, on the test's event loop."""
    server = Mimic()
    runner, server.url = await _start(server.app())
    try:
        yield server
    finally:
        server.unstall.set()
        await runner.cleanup()


@pytest.fixture
def threaded_mimic() -> Iterator[Mimic]:
    """A mimic server on its own loop and thread, for tests that call the blocking CLI."""
    server = Mimic()
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    runners: list[web.AppRunner] = []

    def serve() -> None:
        asyncio.set_event_loop(loop)
        runner, server.url = loop.run_until_complete(_start(server.app()))
        runners.append(runner)
        ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=serve, name="mimic-server", daemon=True)
    thread.start()
    # Readiness is an event, not a sleep; the timeout only guards a broken start.
    assert ready.wait(timeout=30), "mimic server did not start"
    try:
        yield server
    finally:
        loop.call_soon_threadsafe(server.unstall.set)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        assert not thread.is_alive(), "mimic server did not stop"
