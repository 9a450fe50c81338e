"""Fixtures for the fake backend's tests: servers on free ports and a plain HTTP client."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any, Protocol

import aiohttp
import pytest

from chatkeep.fakellm import FakeLLMConfig, FakeLLMServer, start_fake_llm


class RecordedSleep:
    """Stands in for `asyncio.sleep`: notes each pause and returns at once."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


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
