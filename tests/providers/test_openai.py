"""OpenAIProvider: streamed chat completions and the byte-for-byte passthrough."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson
import pytest

from chatkeep.domain.records import Usage
from chatkeep.errors import (
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    StreamCut,
)
from chatkeep.providers.base import ChatRequest
from chatkeep.providers.openai import OpenAIProvider, chat_completions_url
from chatkeep.settings import ModelConfig
from tests.providers.conftest import StartFakeLLM, StartRawBackend

REQUEST = ChatRequest(messages=[{"role": "user", "content": "hello there"}])
SSE = "text/event-stream"


def provider_for(url: str, **fields: Any) -> OpenAIProvider:
    return OpenAIProvider("gpt", ModelConfig(provider="openai", url=url, **fields))


def event(content: str | None = None, finish_reason: str | None = None) -> bytes:
    delta = {} if content is None else {"content": content}
    choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
    return b"data: " + orjson.dumps({"choices": [choice]}) + b"\n\n"


def body_of(stream: bool, **extra: Any) -> bytes:
    payload = {"model": "gpt", "messages": REQUEST.messages, "stream": stream, **extra}
    return orjson.dumps(payload)


@pytest.mark.parametrize(
    ("base", "expected"),
    [
        ("http://h:1", "http://h:1/v1/chat/completions"),
        ("http://h:1/", "http://h:1/v1/chat/completions"),
        ("http://h:1/v1", "http://h:1/v1/chat/completions"),
        ("http://h:1/v1/", "http://h:1/v1/chat/completions"),
        ("http://h:1/proxy", "http://h:1/proxy/v1/chat/completions"),
    ],
)
def test_the_endpoint_tolerates_a_base_with_or_without_v1(base: str, expected: str) -> None:
    assert chat_completions_url(base) == expected


@pytest.mark.parametrize("suffix", ["", "/v1"])
async def test_stream_yields_pieces_then_usage(
    fake_llm: StartFakeLLM, closing: Callable[[Any], Any], collect: Any, suffix: str
) -> None:
    server = await fake_llm(tokens=4)
    provider = closing(provider_for(server.url + suffix))

    chunks, error = await collect(provider.stream(REQUEST))

    assert error is None
    assert [c.text for c in chunks] == ["tok0 ", "tok1 ", "tok2 ", "tok3", ""]
    assert chunks[-1].usage == Usage(prompt_tokens=3, completion_tokens=4)
    assert chunks[-1].finish_reason == "stop"


async def test_complete_collects_the_stream(
    fake_llm: StartFakeLLM, closing: Callable[[Any], Any]
) -> None:
    server = await fake_llm(tokens=2)
    provider = closing(provider_for(server.url))

    completion = await provider.complete(REQUEST)

    assert (completion.text, completion.usage, completion.finish_reason) == (
        "tok0 tok1",
        Usage(3, 2),
        "stop",
    )


async def test_the_request_asks_for_usage_and_carries_the_key(
    raw_backend: StartRawBackend, closing: Callable[[Any], Any]
) -> None:
    backend = await raw_backend([event("hi"), b"data: [DONE]\n\n"], content_type=SSE)
    keyed = closing(provider_for(backend.url, api_key="sk-test"))
    keyless = closing(provider_for(backend.url))

    await keyed.complete(ChatRequest(REQUEST.messages, {"temperature": 0.5}))
    await keyless.complete(REQUEST)

    (headers, body), (keyless_headers, _) = backend.requests
    assert orjson.loads(body) == {
        "temperature": 0.5,
        "model": "gpt",
        "messages": REQUEST.messages,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    assert headers["Authorization"] == "Bearer sk-test"
    assert "Authorization" not in keyless_headers


async def test_a_stream_without_usage_still_ends(
    raw_backend: StartRawBackend, closing: Callable[[Any], Any], collect: Any
) -> None:
    backend = await raw_backend(
        [
            b": keep-alive comment\n\n",
            event("a"),
            event(None, finish_reason="length"),
            b"data: [DONE]\n\n",
        ],
        content_type=SSE,
    )
    provider = closing(provider_for(backend.url))

    chunks, error = await collect(provider.stream(REQUEST))

    assert error is None
    assert [(c.text, c.usage, c.finish_reason) for c in chunks] == [
        ("a", None, None),
        ("", None, "length"),
    ]


async def test_failures_are_unavailable_with_status_and_body(
    fake_llm: StartFakeLLM, closing: Callable[[Any], Any]
) -> None:
    failing = await fake_llm(fail_rate=1.0)
    limited = await fake_llm(status_429_rate=1.0)

    with pytest.raises(ProviderUnavailable, match=r"500.*injected failure"):
        await closing(provider_for(failing.url)).complete(REQUEST)
    with pytest.raises(ProviderUnavailable, match=r"429.*injected rate limit"):
        await closing(provider_for(limited.url)).complete(REQUEST)


async def test_a_refused_request_is_a_provider_error_with_the_body(
    raw_backend: StartRawBackend, closing: Callable[[Any], Any]
) -> None:
    backend = await raw_backend([b'{"error": {"message": "bad key"}}'], status=401)
    provider = closing(provider_for(backend.url))

    with pytest.raises(ProviderError, match=r"401.*bad key") as caught:
        await provider.complete(REQUEST)

    assert not isinstance(caught.value, ProviderUnavailable)


async def test_a_hanging_backend_times_out(
    fake_llm: StartFakeLLM, closing: Callable[[Any], Any]
) -> None:
    server = await fake_llm(timeout_rate=1.0)
    provider = closing(provider_for(server.url, timeout_seconds=0.05))

    with pytest.raises(ProviderTimeout):
        await provider.complete(REQUEST)


async def test_a_relay_from_a_hanging_backend_times_out(
    fake_llm: StartFakeLLM, closing: Callable[[Any], Any]
) -> None:
    server = await fake_llm(timeout_rate=1.0)
    provider = closing(provider_for(server.url, timeout_seconds=0.05))

    with pytest.raises(ProviderTimeout):
        await provider.passthrough(body_of(False))


async def test_a_cut_stream_yields_what_came_then_stream_cut(
    fake_llm: StartFakeLLM, closing: Callable[[Any], Any], collect: Any
) -> None:
    server = await fake_llm(tokens=5, cut_after=3)
    provider = closing(provider_for(server.url))

    chunks, error = await collect(provider.stream(REQUEST))

    assert [c.text for c in chunks] == ["tok0 ", "tok1 ", "tok2 "]
    assert isinstance(error, StreamCut)


async def test_a_clean_end_without_done_is_a_stream_cut(
    raw_backend: StartRawBackend, closing: Callable[[Any], Any], collect: Any
) -> None:
    backend = await raw_backend([event("a"), event(None, finish_reason="stop")], content_type=SSE)
    provider = closing(provider_for(backend.url))

    chunks, error = await collect(provider.stream(REQUEST))

    assert [c.text for c in chunks] == ["a"]
    assert isinstance(error, StreamCut)
    assert "[DONE]" in error.message


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (b'data: {"error": {"message": "overloaded"}}\n\n', "overloaded"),
        (b"data: {not json\n\n", "malformed"),
        (b"data: 42\n\n", "malformed"),
    ],
)
async def test_bad_events_are_unavailable(
    raw_backend: StartRawBackend, closing: Callable[[Any], Any], answer: bytes, expected: str
) -> None:
    backend = await raw_backend([event("ok"), answer], content_type=SSE)
    provider = closing(provider_for(backend.url))

    with pytest.raises(ProviderUnavailable, match=expected):
        await provider.complete(REQUEST)


# -- passthrough ---------------------------------------------------------------------------


async def direct(url: str, body: bytes) -> tuple[int, str, bytes]:
    """What a client talking to the backend itself would get."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(url + "/v1/chat/completions", data=body) as response,
    ):
        return response.status, response.headers["Content-Type"], await response.read()


@pytest.mark.parametrize(
    "body",
    [body_of(False), body_of(True), body_of(True, stream_options={"include_usage": True})],
    ids=["whole", "streamed", "streamed-with-usage"],
)
async def test_passthrough_relays_what_the_backend_says(
    fake_llm: StartFakeLLM, closing: Callable[[Any], Any], body: bytes
) -> None:
    server = await fake_llm(tokens=4)
    provider = closing(provider_for(server.url))
    assert provider.supports_passthrough

    answer = await provider.passthrough(body)
    relayed = b"".join([part async for part in answer.body])

    status, content_type, expected = await direct(server.url, body)
    assert (answer.status, answer.content_type) == (status, content_type)
    # Only the ids and timestamps differ between two answers of the fake.
    assert _normalised(relayed) == _normalised(expected)


def _normalised(body: bytes) -> bytes:
    return re.sub(rb'"(id|created|created_at)":("[^"]*"|\d+)', b"", body)


async def test_passthrough_sends_the_body_unchanged(
    raw_backend: StartRawBackend, closing: Callable[[Any], Any]
) -> None:
    backend = await raw_backend([b'{"ok": true}'])
    provider = closing(provider_for(backend.url, api_key="sk-pass"))
    body = b'{ "model" :"gpt",  "messages":[],"x":1.50 }'

    answer = await provider.passthrough(body)
    assert [part async for part in answer.body] == [b'{"ok": true}']

    headers, received = backend.requests[0]
    assert received == body
    assert headers["Authorization"] == "Bearer sk-pass"


@pytest.mark.parametrize(("fault", "status"), [("fail_rate", 500), ("status_429_rate", 429)])
async def test_passthrough_relays_error_statuses_as_they_are(
    fake_llm: StartFakeLLM, closing: Callable[[Any], Any], fault: str, status: int
) -> None:
    server = await fake_llm(**{fault: 1.0})
    provider = closing(provider_for(server.url))

    answer = await provider.passthrough(body_of(True))
    relayed = b"".join([part async for part in answer.body])

    assert answer.status == status
    assert answer.content_type.startswith("application/json")
    assert b"injected" in relayed


async def test_passthrough_of_a_cut_stream_relays_then_raises(
    fake_llm: StartFakeLLM, closing: Callable[[Any], Any]
) -> None:
    server = await fake_llm(tokens=5, cut_after=2)
    provider = closing(provider_for(server.url))
    relayed = bytearray()

    answer = await provider.passthrough(body_of(True))
    with pytest.raises(StreamCut):
        async for part in answer.body:
            relayed += part

    assert b'"tok1 "' in relayed
    assert b"[DONE]" not in relayed


async def test_passthrough_to_nothing_is_unavailable(
    fake_llm: StartFakeLLM, closing: Callable[[Any], Any]
) -> None:
    server = await fake_llm()
    await server.aclose()
    provider = closing(provider_for(server.url))

    with pytest.raises(ProviderUnavailable):
        await provider.passthrough(body_of(False))


async def test_passthrough_releases_the_connection_when_closed_early(
    fake_llm: StartFakeLLM, closing: Callable[[Any], Any]
) -> None:
    server = await fake_llm(tokens=64, delay_ms=1)
    provider = closing(provider_for(server.url, max_connections=1))

    # With one pooled connection, each relay below would wait forever on a leaked one.
    async with asyncio.timeout(10):
        unread = await provider.passthrough(body_of(True))
        await unread.body.aclose()  # type: ignore[attr-defined]
        await unread.body.aclose()  # type: ignore[attr-defined]

        partly_read = await provider.passthrough(body_of(True))
        async with contextlib.aclosing(partly_read.body) as body:  # type: ignore[type-var]
            async for _ in body:
                break

        reader = asyncio.create_task(_read_all(await provider.passthrough(body_of(True))))
        await asyncio.sleep(0)  # let the reader start waiting on the body
        reader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reader

        last = await provider.passthrough(body_of(False))
        assert b"tok63" in b"".join([part async for part in last.body])


async def _read_all(answer: Any) -> bytes:
    return b"".join([part async for part in answer.body])
