"""Pooled connections the backend has closed: retried before the answer, never after it.

A backend with a shorter keep-alive than chatkeep's closes idle connections that
chatkeep still holds; the next request on one fails before any byte of answer comes
back. The backends here close a connection on its second request, every time, so the
failure needs no timing luck.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import orjson
import pytest

from chatkeep.errors import ProviderUnavailable, StreamCut
from chatkeep.providers.base import ChatRequest
from chatkeep.providers.http import HTTPProvider
from chatkeep.providers.ollama import OllamaProvider
from chatkeep.providers.openai import OpenAIProvider
from chatkeep.settings import ModelConfig
from tests.providers.conftest import StartOneShotBackend

REQUEST = ChatRequest(messages=[{"role": "user", "content": "hi"}])
SSE = b"".join(
    b"data: " + orjson.dumps({"choices": [{"index": 0, "delta": {"content": text}}]}) + b"\n\n"
    for text in ("one ", "two ", "three ", "four")
) + (
    b'data: {"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 4}}\n\n'
    b"data: [DONE]\n\n"
)
NDJSON = (
    b"".join(
        orjson.dumps({"message": {"role": "assistant", "content": text}, "done": False}) + b"\n"
        for text in ("one ", "two ", "three ", "four")
    )
    + orjson.dumps({"done": True, "prompt_eval_count": 1, "eval_count": 4})
    + b"\n"
)
JSON_ANSWER = orjson.dumps({"object": "chat.completion", "choices": []})
PASSTHROUGH_BODY = orjson.dumps({"model": "m", "messages": REQUEST.messages})


def openai(url: str) -> OpenAIProvider:
    return OpenAIProvider("m", ModelConfig(provider="openai", url=url))


def ollama(url: str) -> OllamaProvider:
    return OllamaProvider("m", ModelConfig(provider="ollama", url=url))


async def streamed(provider: HTTPProvider) -> str:
    return "".join([chunk.text async for chunk in provider.stream(REQUEST)])


async def completed(provider: HTTPProvider) -> str:
    return (await provider.complete(REQUEST)).text


async def relayed(provider: HTTPProvider) -> str:
    answer = await provider.passthrough(PASSTHROUGH_BODY)
    return b"".join([part async for part in answer.body]).decode()


CASES = [
    pytest.param(ollama, NDJSON, "application/x-ndjson", streamed, id="ollama-stream"),
    pytest.param(ollama, NDJSON, "application/x-ndjson", completed, id="ollama-complete"),
    pytest.param(openai, SSE, "text/event-stream", streamed, id="openai-stream"),
    pytest.param(openai, SSE, "text/event-stream", completed, id="openai-complete"),
    pytest.param(openai, JSON_ANSWER, "application/json", relayed, id="passthrough"),
]


@pytest.mark.parametrize(("make", "answer", "content_type", "call"), CASES)
async def test_a_request_on_a_closed_pooled_connection_is_retried_on_a_fresh_one(
    one_shot_backend: StartOneShotBackend,
    closing: Callable[[Any], Any],
    make: Callable[[str], HTTPProvider],
    answer: bytes,
    content_type: str,
    call: Callable[[HTTPProvider], Any],
) -> None:
    backend = await one_shot_backend(answer, content_type, on_reuse="close")
    provider = closing(make(backend.url))

    first = await call(provider)
    second = await call(provider)

    assert first == second != ""
    # The second request went out twice: on the pooled connection, then on a new one.
    assert backend.connections == 2
    assert len(backend.requests) == 3
    assert backend.requests[1] == backend.requests[2]


async def test_a_stream_that_broke_after_its_first_bytes_is_not_retried(
    one_shot_backend: StartOneShotBackend, closing: Callable[[Any], Any], collect: Any
) -> None:
    backend = await one_shot_backend(SSE, "text/event-stream", on_reuse="cut")
    provider = closing(openai(backend.url))
    await streamed(provider)

    chunks, error = await collect(provider.stream(REQUEST))

    assert isinstance(error, StreamCut)
    assert [c.text for c in chunks] == ["one ", "two "]
    assert (backend.connections, len(backend.requests)) == (1, 2)


async def test_a_relay_that_broke_after_its_first_bytes_is_not_retried(
    one_shot_backend: StartOneShotBackend, closing: Callable[[Any], Any]
) -> None:
    backend = await one_shot_backend(SSE, "text/event-stream", on_reuse="cut")
    provider = closing(openai(backend.url))
    await relayed(provider)

    answer = await provider.passthrough(PASSTHROUGH_BODY)
    parts: list[bytes] = []
    with pytest.raises(StreamCut):
        async for part in answer.body:
            parts.append(part)

    assert b"".join(parts) == SSE[: len(SSE) // 2]
    assert (backend.connections, len(backend.requests)) == (1, 2)


async def test_a_fresh_connection_closed_without_an_answer_is_not_retried(
    closing: Callable[[Any], Any],
) -> None:
    received: list[bytes] = []

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await reader.readuntil(b"\r\n\r\n"))
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    async with server:
        provider = closing(openai(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"))

        with pytest.raises(ProviderUnavailable, match="disconnected"):
            await provider.complete(REQUEST)

    assert len(received) == 1


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def pool_clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeClock]:
    """The clock aiohttp's connection pool reads to expire idle connections."""
    clock = FakeClock()
    monkeypatch.setattr(aiohttp.connector, "monotonic", clock)
    yield clock


async def test_idle_connections_are_dropped_before_a_backend_would_drop_them(
    one_shot_backend: StartOneShotBackend,
    closing: Callable[[Any], Any],
    pool_clock: FakeClock,
) -> None:
    # uvicorn (vLLM and most Python backends) closes connections idle for 5 s.
    backend = await one_shot_backend(NDJSON, "application/x-ndjson")
    provider = closing(ollama(backend.url))
    await streamed(provider)

    pool_clock.now += 4.5
    await streamed(provider)

    # Not reused: a new connection, and no failed attempt on the old one.
    assert (backend.connections, len(backend.requests)) == (2, 2)
    assert ModelConfig(provider="echo").keepalive_seconds < 5.0


async def test_models_sharing_a_backend_keep_connections_for_the_shortest_keepalive(
    one_shot_backend: StartOneShotBackend, pool_clock: FakeClock
) -> None:
    from chatkeep.providers.registry import ProviderRegistry

    backend = await one_shot_backend(NDJSON, "application/x-ndjson")
    registry = ProviderRegistry(
        {
            "patient": ModelConfig(provider="ollama", url=backend.url, keepalive_seconds=60),
            "careful": ModelConfig(provider="ollama", url=backend.url, keepalive_seconds=1),
        }
    )
    try:
        patient = registry.route("patient").provider
        assert isinstance(patient, HTTPProvider)
        await streamed(patient)
        pool_clock.now += 2
        await streamed(patient)
    finally:
        await registry.aclose()

    assert (backend.connections, len(backend.requests)) == (2, 2)
