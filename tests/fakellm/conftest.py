"""Fixtures for the fake backend's tests: servers on free ports, a plain HTTP client,
stand-ins for `asyncio.sleep`, and the requests every test sends."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

import aiohttp
import orjson
import pytest

from chatkeep.fakellm import FakeLLMConfig, FakeLLMServer, start_fake_llm

MESSAGES = [{"role": "user", "content": "hello there"}]
OPENAI = "/v1/chat/completions"
OLLAMA = "/api/chat"


def chat(**fields: Any) -> bytes:
    """A chat request body to model ``m``, with ``fields`` on top."""
    return orjson.dumps({"model": "m", "messages": MESSAGES, **fields})


def sse_events(body: bytes) -> list[Any]:
    """The data of each event; ``[DONE]`` stays a string."""
    events = [part[len(b"data: ") :] for part in body.split(b"\n\n") if part]
    return [e.decode() if e == b"[DONE]" else orjson.loads(e) for e in events]


async def post(
    http: aiohttp.ClientSession, server: FakeLLMServer, path: str, body: bytes
) -> tuple[int, Mapping[str, str], bytes]:
    """Status, headers and whole body of one POST."""
    async with http.post(server.url + path, data=body) as response:
        return response.status, response.headers, await response.read()


async def statuses(http: aiohttp.ClientSession, server: FakeLLMServer, count: int) -> list[int]:
    """The statuses of ``count`` whole OpenAI chat requests sent one after the other."""
    return [(await post(http, server, OPENAI, chat()))[0] for _ in range(count)]


class RecordedSleep:
    """Stands in for `asyncio.sleep`: notes each pause and returns at once."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


class GatedSleep:
    """Stands in for `asyncio.sleep`: the first ``passes`` pauses return at once, the
    others wait for `gate`.

    `entered` is set when a pause starts waiting and `cancelled` when one is cancelled,
    which is what aiohttp does to a handler whose client went away.
    """

    def __init__(self, passes: int = 0) -> None:
        self.calls: list[float] = []
        self.passes = passes
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()
        self.cancelled = asyncio.Event()

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        if len(self.calls) <= self.passes:
            return
        self.entered.set()
        try:
            await self.gate.wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise


class StartServer(Protocol):
    async def __call__(
        self, config: FakeLLMConfig | None = None, *, sleep: Any = None, **fields: Any
    ) -> FakeLLMServer: ...


@pytest.fixture
async def start_server() -> AsyncIterator[StartServer]:
    """``await start_server(tokens=3, sleep=recorder)``; every server stops after the test."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(
            config: FakeLLMConfig | None = None, *, sleep: Any = None, **fields: Any
        ) -> FakeLLMServer:
            config = config or FakeLLMConfig(**{"tokens": 3, **fields})
            extra = {"sleep": sleep} if sleep is not None else {}
            return await stack.enter_async_context(await start_fake_llm(config, **extra))

        yield start


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session
