"""Ollama's native chat API: ``POST {url}/api/chat``, streamed as NDJSON.

Each line is ``{"message": {"role": "assistant", "content": "..."}, "done": false}``;
the last has ``"done": true`` with ``done_reason``, ``prompt_eval_count`` and
``eval_count``. A stream that ends before that line is a `StreamCut`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from chatkeep.errors import ProviderUnavailable
from chatkeep.providers.base import ChatRequest, Chunk
from chatkeep.providers.http import (
    HTTPProvider,
    Lines,
    drain,
    excerpt,
    provider_errors,
    raise_for_status,
    stream_cut,
)
from chatkeep.providers.usage import backend_usage

#: Request options that Ollama takes at the top level; every other one goes in "options".
_TOP_LEVEL_OPTIONS = frozenset({"format", "keep_alive", "tools", "think"})


def ollama_body(model: str, request: ChatRequest) -> dict[str, Any]:
    """The ``/api/chat`` body of a request; ``max_tokens`` becomes Ollama's ``num_predict``."""
    body: dict[str, Any] = {"model": model, "messages": request.messages, "stream": True}
    options: dict[str, Any] = {}
    for key, value in request.options.items():
        if key in _TOP_LEVEL_OPTIONS:
            body[key] = value
        elif key == "max_tokens":
            options["num_predict"] = value
        else:
            options[key] = value
    if options:
        body["options"] = options
    return body


class OllamaProvider(HTTPProvider):
    """Talks to one Ollama server.

    Shares its session as `HTTPProvider` describes.
    """

    kind = "ollama"

    @staticmethod
    def chat_url(base_url: str) -> str:
        return base_url.rstrip("/") + "/api/chat"

    @staticmethod
    def probe_url(base_url: str) -> str:
        return base_url.rstrip("/") + "/api/tags"

    async def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        payload = orjson.dumps(ollama_body(self.upstream_model, request))
        pieces = 0
        final: Chunk | None = None
        with provider_errors(self._label):
            async with await self.send(payload) as response:
                await raise_for_status(response, self._label)
                async for line in Lines(response):
                    if not line.strip():
                        continue
                    chunk, done = self._parse(orjson.loads(line))
                    if done:
                        final = chunk
                        await drain(response)
                        break
                    if chunk.text:
                        pieces += 1
                        yield chunk
        if final is None:
            raise stream_cut(self._label, 'a "done": true line', pieces)
        # Yielded after the response is released: a consumer that stops here holds nothing.
        yield final

    def _parse(self, event: Any) -> tuple[Chunk, bool]:
        if not isinstance(event, dict):
            raise ProviderUnavailable(f"{self._label}: malformed line (not an object)")
        if "error" in event:
            raise ProviderUnavailable(f"{self._label} reported: {excerpt(str(event['error']))}")
        message = event.get("message")
        content = message.get("content", "") if isinstance(message, dict) else ""
        if not isinstance(content, str):
            raise ProviderUnavailable(f"{self._label}: malformed line (content is not text)")
        if event.get("done") is not True:
            return Chunk(content), False
        usage = backend_usage(event.get("prompt_eval_count"), event.get("eval_count"), self._label)
        reason = event.get("done_reason")
        return Chunk(content, usage, reason if isinstance(reason, str) else "stop"), True
