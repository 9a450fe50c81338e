"""Fixtures for provider tests: fake backends on port 0, hand-written backends, cleanup.

The suite-wide conftest already fails a test that leaves tasks running.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

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
