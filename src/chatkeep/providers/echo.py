"""The built-in `echo` model: deterministic replies from the input, no network.

It streams the reply word by word, optionally waiting ``delay_ms`` before each
piece, so it can stand in for a slow model in tests and demos.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from chatkeep.domain.records import Usage
from chatkeep.domain.tokens import estimate_tokens
from chatkeep.providers.base import ChatRequest, Chunk, Provider


def echo_reply(request: ChatRequest) -> str:
    """The reply echo gives: the last user message, quoted back."""
    last_user = next((m["content"] for m in reversed(request.messages) if m["role"] == "user"), "")
    return f"echo: {last_user}"


class EchoProvider(Provider):
    """Replies ``echo: <last user message>``, streamed one word (with its space) at a time.

    It needs no whole-reply timer: a reply is a bounded number of words, each at most
    ``delay_ms`` apart.
    """

    def __init__(self, delay_ms: float = 0.0) -> None:
        self._delay = delay_ms / 1000.0

    async def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        reply = echo_reply(request)
        words = reply.split(" ")
        prompt_tokens = sum(estimate_tokens(m["content"]) for m in request.messages)
        for index, word in enumerate(words):
            if self._delay:
                await asyncio.sleep(self._delay)
            piece = word if index == len(words) - 1 else word + " "
            last = index == len(words) - 1
            yield Chunk(
                piece,
                usage=Usage(prompt_tokens, estimate_tokens(reply)) if last else None,
                finish_reason="stop" if last else None,
            )
