"""Test-only pieces for provider pool tests: a scripted backend and a fake clock.

`ScriptedBackend` speaks OpenAI-compatible SSE, answers probes on ``/v1/models``, and
does what the test sets, request by request: an error status (with ``Retry-After``),
an opening sent before the first token (a role-only chunk, keep-alive comments, as
OpenAI-style servers send), waiting on an event before its first token or after it,
its connection dropped after the opening, and going down and up again on the same
port. It counts what it saw, disconnects included (aiohttp cancels a handler whose
client went away), so a test can check that a cancelled request's connection was
really closed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from aiohttp.web_request import BaseRequest

from chatkeep.providers.registry import ProviderRegistry
from chatkeep.settings import ModelConfig


class FakeClock:
    """A monotonic clock that moves only when told; `sleep` moves it instead of waiting."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


#: What an OpenAI-style stream sends before any text: the role, then a keep-alive comment.
OPENING = (
    b"data: "
    + orjson.dumps({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
    + b"\n\n: keep-alive\n\n"
)


def sse_piece(text: str) -> bytes:
    return (
        b"data: " + orjson.dumps({"choices": [{"index": 0, "delta": {"content": text}}]}) + b"\n\n"
    )


@dataclass
class ScriptedBackend:
    """An OpenAI-compatible backend whose behaviour the test sets (see the module doc)."""

    tokens: int = 3
    #: Answer every chat request with this status (and ``retry_after`` as its header).
    status: int | None = None
    #: Statuses for the next requests, in order, before ``status`` applies again.
    script: list[int] = field(default_factory=list)
    retry_after: str | None = None
    #: Sent at once, before waiting for ``before_first`` (a stream's text-free opening).
    opening: bytes | None = None
    #: Drop the connection right after the opening, as a backend killed then would.
    die_after_opening: bool = False
    #: Wait for this event before the first token (a slow first token, or a hang).
    before_first: asyncio.Event | None = None
    #: Wait for this event after the first token (a reply in the middle of its stream).
    after_first: asyncio.Event | None = None
    url: str = ""
    port: int = 0
    requests: int = 0
    probes: int = 0
    answered: int = 0
    disconnects: int = 0
    #: Set when a request arrives (reset by the test to wait for the next).
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    bodies: list[dict[str, Any]] = field(default_factory=list)
    _runner: web.BaseRunner | None = None

    async def start(self) -> None:
        server = web.Server(self._handle, handler_cancellation=True, access_log=None)
        self._runner = web.ServerRunner(server, shutdown_timeout=0.1, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        self.port = int(self._runner.addresses[0][1])
        self.url = f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        """Go down: connections are closed, new ones refused (until `start`)."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _handle(self, request: BaseRequest) -> web.StreamResponse:
        if request.method == "GET":
            self.probes += 1
            return web.json_response({"object": "list", "data": []})
        self.requests += 1
        self.bodies.append(orjson.loads(await request.read()))
        self.arrived.set()
        try:
            return await self._answer(request)
        except asyncio.CancelledError:
            self.disconnects += 1
            raise

    async def _answer(self, request: BaseRequest) -> web.StreamResponse:
        status = self.script.pop(0) if self.script else self.status
        if status is not None and status != 200:
            headers = {"Retry-After": self.retry_after} if self.retry_after else None
            body = orjson.dumps({"error": {"message": f"scripted {status}"}})
            return web.Response(status=status, body=body, headers=headers)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        if self.opening is not None:
            await response.prepare(request)
            await response.write(self.opening)
            if self.die_after_opening:
                assert request.transport is not None
                request.transport.abort()  # no end of the chunked body: a cut stream
                return response
        if self.before_first is not None:
            await self.before_first.wait()
        await response.prepare(request)
        await response.write(sse_piece("tok0 "))
        if self.after_first is not None:
            await self.after_first.wait()
        for index in range(1, self.tokens):
            await response.write(sse_piece(f"tok{index} "))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        self.answered += 1
        return response


StartScripted = Callable[..., Awaitable[ScriptedBackend]]


@contextlib.asynccontextmanager
async def scripted_backends() -> AsyncIterator[StartScripted]:
    """``start(status=500)`` starts a `ScriptedBackend`; all are stopped at the end."""
    started: list[ScriptedBackend] = []

    async def start(**fields: Any) -> ScriptedBackend:
        backend = ScriptedBackend(**fields)
        await backend.start()
        started.append(backend)
        return backend

    try:
        yield start
    finally:
        for backend in started:
            # Anything the test left waiting is let go, so handlers end and the server stops.
            for event in (backend.before_first, backend.after_first):
                if event is not None:
                    event.set()
            await backend.stop()


def pool_model(*urls: str, **options: Any) -> ModelConfig:
    """An OpenAI-compatible model served by a pool of ``urls``, named b0, b1…"""
    backends = [{"name": f"b{index}", "url": url} for index, url in enumerate(urls)]
    return ModelConfig(provider="openai", backends=backends, **options)


@contextlib.asynccontextmanager
async def registry_of(
    models: dict[str, ModelConfig], clock: FakeClock | None = None
) -> AsyncIterator[ProviderRegistry]:
    """A registry with ``clock`` (its `sleep` too), closed at the end of the block."""
    if clock is None:
        registry = ProviderRegistry(models)
    else:
        registry = ProviderRegistry(models, clock=clock, sleep=clock.sleep)
    try:
        yield registry
    finally:
        await registry.aclose()
