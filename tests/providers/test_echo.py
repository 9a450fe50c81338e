"""The built-in echo provider."""

from __future__ import annotations

import contextlib

from chatkeep.domain.records import Usage
from chatkeep.providers.base import ChatRequest
from chatkeep.providers.echo import EchoProvider

REQUEST = ChatRequest(
    messages=[
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "echo: first"},
        {"role": "user", "content": "hello big world"},
    ],
)


async def test_echo_streams_the_last_user_message_word_by_word() -> None:
    chunks = [chunk async for chunk in EchoProvider().stream(REQUEST)]

    assert [c.text for c in chunks] == ["echo: ", "hello ", "big ", "world"]
    assert [c.finish_reason for c in chunks] == [None, None, None, "stop"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert all(c.usage is None for c in chunks[:-1])


async def test_echo_completes_and_bills_the_prompt() -> None:
    completion = await EchoProvider().complete(REQUEST)

    assert completion.text == "echo: hello big world"
    assert completion.finish_reason == "stop"
    assert isinstance(completion.usage, Usage) and completion.usage.prompt_tokens >= 4


async def test_echo_without_a_user_message_still_answers() -> None:
    completion = await EchoProvider().complete(ChatRequest([]))

    assert completion.text == "echo: "


async def test_echo_is_not_a_passthrough_and_closes_quietly() -> None:
    provider = EchoProvider(delay_ms=0.1)

    async with contextlib.aclosing(provider.stream(REQUEST)) as stream:
        first = await anext(stream)

    assert first.text == "echo: "
    assert not provider.supports_passthrough
    await provider.aclose()
    await provider.aclose()
