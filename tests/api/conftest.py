"""In-process API tests: the app runs its lifespan; httpx talks ASGI to it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from chatkeep.app import create_app
from chatkeep.domain.tokens import estimate_tokens
from chatkeep.errors import ProviderUnavailable, UnknownModel
from chatkeep.providers.base import ChatRequest, Chunk, Provider
from chatkeep.providers.echo import EchoProvider
from chatkeep.providers.registry import ModelRoute
from chatkeep.settings import ModelConfig, Settings


class GatedProvider(Provider):
    """A model that replies one piece per `release()` call: tests drive it with events."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self._pieces: asyncio.Queue[str | Exception | None] = asyncio.Queue()

    def release(self, *pieces: str | Exception | None) -> None:
        for piece in pieces:
            self._pieces.put_nowait(piece)

    async def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        self.started.set()
        while True:
            piece = await self._pieces.get()
            if piece is None:
                return
            if isinstance(piece, Exception):
                raise piece
            yield Chunk(piece)


class FailingProvider(Provider):
    """Streams two pieces, then fails like a backend that went away."""

    async def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        yield Chunk("partial ")
        yield Chunk("text")
        raise ProviderUnavailable("backend answered 500: boom")


class TestProviders:
    """A stand-in for `ProviderRegistry` holding the test's providers."""

    def __init__(self, providers: dict[str, Provider]) -> None:
        self._routes = {
            name: ModelRoute(
                name=name,
                provider=provider,
                upstream_model=name,
                context_tokens=4096,
                estimator=estimate_tokens,
                timeout_seconds=120.0,
                config=ModelConfig(provider="echo"),
            )
            for name, provider in providers.items()
        }

    def route(self, name: str) -> ModelRoute:
        if name not in self._routes:
            raise UnknownModel(f"unknown model {name!r}")
        return self._routes[name]

    def names(self) -> list[str]:
        return sorted(self._routes)

    def metric_families(self) -> Iterator[Any]:
        return iter(())

    def provider_stats(self) -> list[dict[str, Any]]:
        return []

    async def aclose(self) -> None:
        return None


ClientFactory = Callable[..., Awaitable[httpx.AsyncClient]]


@pytest.fixture
def gated() -> GatedProvider:
    return GatedProvider()


@pytest.fixture
async def make_client(
    tmp_path: Path, gated: GatedProvider
) -> AsyncIterator[Callable[..., Awaitable[httpx.AsyncClient]]]:
    """Build an app with settings overrides and return a client bound to it."""
    stack: list[tuple[Any, httpx.AsyncClient]] = []

    async def factory(**overrides: Any) -> httpx.AsyncClient:
        values: dict[str, Any] = {
            "data_dir": tmp_path / f"data{len(stack)}",
            "models": {
                "echo": ModelConfig(provider="echo"),
                "gated": ModelConfig(provider="echo"),
                "failing": ModelConfig(provider="echo"),
            },
        }
        memory = overrides.pop("memory", None)
        store = overrides.pop("store", None)
        values.update(overrides)
        settings = Settings(**values)
        providers = TestProviders(
            {"echo": EchoProvider(), "gated": gated, "failing": FailingProvider()}
        )
        app = create_app(
            settings,
            providers=providers,  # type: ignore[arg-type]
            memory=memory,
            store=store,
        )
        lifespan = app.router.lifespan_context(app)
        await lifespan.__aenter__()
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://chatkeep.test"
        )
        stack.append((lifespan, client))
        return client

    yield factory
    for lifespan, client in reversed(stack):
        await client.aclose()
        await lifespan.__aexit__(None, None, None)


@pytest.fixture
async def client(make_client: ClientFactory) -> httpx.AsyncClient:
    return await make_client()


def sse_events(text: str) -> list[dict[str, str]]:
    """Parse an SSE body into a list of {event, data, id} dicts (comments skipped)."""
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            if not line or line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            fields[name] = value[1:] if value.startswith(" ") else value
        if "data" in fields or "event" in fields:
            events.append(fields)
    return events
