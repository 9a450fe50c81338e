"""Fixtures for provider tests: fake backends on port 0, hand-written backends, cleanup.

The suite-wide conftest already fails a test that leaves tasks running.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar

import pytest
from aiohttp import web
from aiohttp.web_request import BaseRequest

from chatkeep.errors import ProviderError
from chatkeep.fakellm import FakeLLMConfig, FakeLLMServer, start_fake_llm
from chatkeep.providers.base import Chunk

Closable = TypeVar("Closable")


class StartFakeLLM(Protocol):
    async def __call__(
        self, config: FakeLLMConfig | None = None, **fields: Any
    ) -> FakeLLMServer: ...


@pytest.fixture
async def fake_llm() -> AsyncIterator[StartFakeLLM]:
    """Start fake backends on free ports: ``await fake_llm(tokens=4, fail_rate=1.0)``.

    Defaults to 4-token replies; every backend started is stopped after the test.
    """
    async with contextlib.AsyncExitStack() as stack:

        async def start(config: FakeLLMConfig | None = None, **fields: Any) -> FakeLLMServer:
            config = config or FakeLLMConfig(**{"tokens": 4, **fields})
            return await stack.enter_async_context(await start_fake_llm(config))

        yield start


@dataclass
class RawBackend:
    """A hand-written backend: it answers every request with the same bytes."""

    url: str
    #: (headers, body) of every request received, in order.
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)


class StartRawBackend(Protocol):
    async def __call__(
        self, parts: list[bytes], *, status: int = 200, content_type: str = "application/json"
    ) -> RawBackend: ...


@pytest.fixture
async def raw_backend() -> AsyncIterator[StartRawBackend]:
    """Serve fixed answers the fake backend never gives, and record what was sent.

    ``parts`` are written one by one as a chunked body that ends cleanly: malformed
    lines, streams without their terminal marker, error lines.
    """
    runners: list[web.BaseRunner] = []

    async def serve(
        parts: list[bytes], *, status: int = 200, content_type: str = "application/json"
    ) -> RawBackend:
        backend = RawBackend(url="")

        async def handler(request: BaseRequest) -> web.StreamResponse:
            backend.requests.append((dict(request.headers), await request.read()))
            response = web.StreamResponse(status=status, headers={"Content-Type": content_type})
            await response.prepare(request)
            for part in parts:
                await response.write(part)
            await response.write_eof()
            return response

        runner = web.ServerRunner(web.Server(handler, access_log=None), shutdown_timeout=1.0)
        await runner.setup()
        runners.append(runner)
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        backend.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        return backend

    yield serve
    for runner in runners:
        await runner.cleanup()


@dataclass
class OneShotBackend:
    """A backend that serves one request per connection and fails the next one on it.

    The second request on a connection finds it dead, as a request on a pooled
    connection does when the backend's keep-alive ran out first: ``"close"`` closes the
    connection without a byte of answer; ``"cut"`` sends the head and half the body first.
    """

    url: str
    answer: bytes
    content_type: str
    on_reuse: Literal["close", "cut"]
    #: The body of every request received, in order (the failed ones too).
    requests: list[bytes] = field(default_factory=list)
    connections: int = 0
    _handlers: set[asyncio.Task[None]] = field(default_factory=set)
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.add(writer)
        try:
            for index in range(2):
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                self.requests.append(await reader.readexactly(length))
                if index == 0:
                    writer.write(self._head() + self.answer)
                elif self.on_reuse == "cut":
                    writer.write(self._head() + self.answer[: len(self.answer) // 2])
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client closed its connection
        finally:
            writer.close()
            self._writers.discard(writer)
            self._handlers.discard(task)

    def _head(self) -> bytes:
        return (
            f"HTTP/1.1 200 OK\r\nContent-Type: {self.content_type}\r\n"
            f"Content-Length: {len(self.answer)}\r\n\r\n"
        ).encode()

    async def stop(self) -> None:
        for writer in list(self._writers):
            writer.close()
        if self._handlers:
            await asyncio.wait(set(self._handlers), timeout=10)


class StartOneShotBackend(Protocol):
    async def __call__(
        self, answer: bytes, content_type: str, *, on_reuse: Literal["close", "cut"] = "close"
    ) -> OneShotBackend: ...


@pytest.fixture
async def one_shot_backend() -> AsyncIterator[StartOneShotBackend]:
    """Start `OneShotBackend`s on free ports; each is stopped after the test."""
    started: list[tuple[asyncio.Server, OneShotBackend]] = []

    async def start(
        answer: bytes, content_type: str, *, on_reuse: Literal["close", "cut"] = "close"
    ) -> OneShotBackend:
        backend = OneShotBackend("", answer, content_type, on_reuse)
        server = await asyncio.start_server(backend.serve, "127.0.0.1", 0)
        backend.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        started.append((server, backend))
        return backend

    yield start
    for server, backend in started:
        server.close()
        await backend.stop()
        await server.wait_closed()


@pytest.fixture
async def closing() -> AsyncIterator[Callable[[Closable], Closable]]:
    """``provider = closing(OllamaProvider(...))``: `aclose` it after the test."""
    async with contextlib.AsyncExitStack() as stack:

        def close_later(resource: Closable) -> Closable:
            stack.push_async_callback(resource.aclose)  # type: ignore[attr-defined]
            return resource

        yield close_later


@pytest.fixture
def collect() -> Callable[[AsyncIterator[Chunk]], Awaitable[tuple[list[Chunk], Exception | None]]]:
    """Read a stream to its end: the chunks received, and the `ProviderError` that ended it."""

    async def read(stream: AsyncIterator[Chunk]) -> tuple[list[Chunk], Exception | None]:
        chunks: list[Chunk] = []
        try:
            async for chunk in stream:
                chunks.append(chunk)
        except ProviderError as exc:
            return chunks, exc
        return chunks, None

    return read
