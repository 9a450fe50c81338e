"""OllamaProvider against the fake backend and hand-written answers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from chatkeep.domain.records import Usage
from chatkeep.errors import (
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    StreamCut,
)
from chatkeep.providers.base import ChatRequest, Chunk
from chatkeep.providers.http import MAX_LINE_BYTES
from chatkeep.providers.ollama import OllamaProvider, ollama_body
from chatkeep.settings import ModelConfig
from tests.providers.conftest import StartFakeLLM, StartRawBackend

REQUEST = ChatRequest(messages=[{"role": "user", "content": "hello there"}])
NDJSON = "application/x-ndjson"


def provider_for(url: str, **fields: Any) -> OllamaProvider:
    return OllamaProvider("llama", ModelConfig(provider="ollama", url=url, **fields))


def line(content: str, **extra: Any) -> bytes:
    event = {"message": {"role": "assistant", "content": content}, "done": False, **extra}
    return orjson.dumps(event) + b"\n"


async def test_stream_yields_pieces_then_usage(
    fake_llm: StartFakeLLM, closing: Callable[[Any], Any], collect: Any
) -> None:
    server = await fake_llm(tokens=4)
    provider = closing(provider_for(server.url))

    chunks, error = await collect(provider.stream(REQUEST))

    assert error is None
    assert [c.text for c in chunks] == ["tok0 ", "tok1 ", "tok2 ", "tok3", ""]
    assert all(c.usage is None and c.finish_reason is None for c in chunks[:-1])
    # "hello there" is 3 tokens by the default estimate; the fake bills 4 for the reply.
    assert chunks[-1].usage == Usage(prompt_tokens=3, completion_tokens=4)
    assert chunks[-1].finish_reason == "stop"


async def test_complete_collects_the_stream(
    fake_llm: StartFakeLLM, closing: Callable[[Any], Any]
) -> None:
    server = await fake_llm(tokens=3)
    provider = closing(provider_for(server.url + "/"))

    completion = await provider.complete(REQUEST)

    assert completion.text == "tok0 tok1 tok2"
    assert completion.usage == Usage(3, 3)
    assert completion.finish_reason == "stop"


async def test_the_request_is_a_native_streamed_chat(
    raw_backend: StartRawBackend, closing: Callable[[Any], Any]
) -> None:
    backend = await raw_backend(
        [line("hi"), line("", done=True, prompt_eval_count=1, eval_count=1)], content_type=NDJSON
    )
    provider = closing(provider_for(backend.url, api_key="sekret"))
    request = ChatRequest(REQUEST.messages, {"temperature": 0.2, "max_tokens": 9})

    await provider.complete(request)

    headers, body = backend.requests[0]
    assert orjson.loads(body) == ollama_body("llama", request)
    assert headers["Authorization"] == "Bearer sekret"


def test_options_are_mapped_to_ollama_names() -> None:
    request = ChatRequest([], {"max_tokens": 5, "temperature": 0.1, "keep_alive": "5m"})

    body = ollama_body("m", request)

    assert body == {
        "model": "m",
        "messages": [],
        "stream": True,
        "keep_alive": "5m",
        "options": {"num_predict": 5, "temperature": 0.1},
    }


async def test_a_failing_backend_is_unavailable_with_status_and_body(
    fake_llm: StartFakeLLM, closing: Callable[[Any], Any]
) -> None:
    server = await fake_llm(fail_rate=1.0)
    provider = closing(provider_for(server.url))

    with pytest.raises(ProviderUnavailable) as caught:
        await provider.complete(REQUEST)

    assert "500" in caught.value.message
    assert "injected failure" in caught.value.message
    assert server.url in caught.value.message


async def test_rate_limited_is_unavailable(
    fake_llm: StartFakeLLM, closing: Callable[[Any], Any]
) -> None:
    server = await fake_llm(status_429_rate=1.0)
    provider = closing(provider_for(server.url))

    with pytest.raises(ProviderUnavailable, match="429"):
        await provider.complete(REQUEST)


async def test_other_client_errors_are_provider_errors_not_retryable(
    fake_llm: StartFakeLLM, closing: Callable[[Any], Any]
) -> None:
    server = await fake_llm()
    provider = closing(provider_for(server.url + "/no/such/prefix"))

    with pytest.raises(ProviderError, match="404") as caught:
        await provider.complete(REQUEST)

    assert not isinstance(caught.value, ProviderUnavailable)


async def test_a_hanging_backend_times_out(
    fake_llm: StartFakeLLM, closing: Callable[[Any], Any]
) -> None:
    server = await fake_llm(timeout_rate=1.0, hang_seconds=30.0)
    provider = closing(provider_for(server.url, timeout_seconds=0.05))

    with pytest.raises(ProviderTimeout):
        await provider.complete(REQUEST)

    assert server.app.counts["hang"] == 1


async def test_an_unreachable_backend_is_unavailable(
    fake_llm: StartFakeLLM, closing: Callable[[Any], Any]
) -> None:
    server = await fake_llm()
    url = server.url
    await server.aclose()  # nothing listens on that port any more
    provider = closing(provider_for(url))

    with pytest.raises(ProviderUnavailable, match="cannot connect"):
        await provider.complete(REQUEST)


async def test_a_cut_stream_yields_what_came_then_stream_cut(
    fake_llm: StartFakeLLM, closing: Callable[[Any], Any], collect: Any
) -> None:
    server = await fake_llm(tokens=6, cut_after=2)
    provider = closing(provider_for(server.url))

    chunks, error = await collect(provider.stream(REQUEST))

    assert [c.text for c in chunks] == ["tok0 ", "tok1 "]
    assert isinstance(error, StreamCut)


async def test_a_clean_end_without_done_is_a_stream_cut(
    raw_backend: StartRawBackend, closing: Callable[[Any], Any], collect: Any
) -> None:
    backend = await raw_backend([line("a "), line("b")], content_type=NDJSON)
    provider = closing(provider_for(backend.url))

    chunks, error = await collect(provider.stream(REQUEST))

    assert [c.text for c in chunks] == ["a ", "b"]
    assert isinstance(error, StreamCut)
    assert "after 2 pieces" in error.message


async def test_lines_split_across_writes_and_crlf_are_read(
    raw_backend: StartRawBackend, closing: Callable[[Any], Any]
) -> None:
    first, last = line("a "), line("b", done=True, prompt_eval_count=1, eval_count=2)
    backend = await raw_backend(
        [first[:10], first[10:-1] + b"\r\n", b"\n", last[:-1]],  # the last has no newline
        content_type=NDJSON,
    )
    provider = closing(provider_for(backend.url))

    completion = await provider.complete(REQUEST)

    assert completion.text == "a b"
    assert completion.usage == Usage(1, 2)


async def test_an_endless_line_is_refused(
    raw_backend: StartRawBackend, closing: Callable[[Any], Any]
) -> None:
    backend = await raw_backend([b"x" * (MAX_LINE_BYTES + 1)], content_type=NDJSON)
    provider = closing(provider_for(backend.url))

    with pytest.raises(ProviderUnavailable, match="longer than"):
        await provider.complete(REQUEST)


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (b'{"error": "model \\"llama\\" not found"}\n', "not found"),
        (b"this is not json\n", "malformed"),
        (b'["an", "array"]\n', "malformed"),
        (b'{"message": {"content": 42}, "done": false}\n', "malformed"),
    ],
)
async def test_bad_lines_are_unavailable(
    raw_backend: StartRawBackend,
    closing: Callable[[Any], Any],
    answer: bytes,
    expected: str,
) -> None:
    backend = await raw_backend([line("ok "), answer], content_type=NDJSON)
    provider = closing(provider_for(backend.url))

    with pytest.raises(ProviderUnavailable, match=expected):
        await provider.complete(REQUEST)


async def test_a_consumer_may_stop_early(
    fake_llm: StartFakeLLM, closing: Callable[[Any], Any]
) -> None:
    server = await fake_llm(tokens=8)
    provider = closing(provider_for(server.url, max_connections=1))
    first: list[Chunk] = []

    # With one pooled connection, a leaked response would block the second stream.
    async with asyncio.timeout(10):
        for _ in range(2):
            async with contextlib.aclosing(provider.stream(REQUEST)) as stream:
                async for chunk in stream:
                    first.append(chunk)
                    break

    assert [c.text for c in first] == ["tok0 ", "tok0 "]


async def test_aclose_is_safe_twice_and_use_after_close_is_an_error(
    fake_llm: StartFakeLLM,
) -> None:
    server = await fake_llm()
    provider = provider_for(server.url)
    await provider.complete(REQUEST)
    session = provider.session.get()

    await provider.aclose()
    await provider.aclose()

    assert session.closed
    with pytest.raises(RuntimeError, match="closed"):
        await provider.complete(REQUEST)
