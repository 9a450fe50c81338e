"""OpenAI-compatible chat completions: ``POST {url}/v1/chat/completions``, streamed as SSE.

Streams ask for ``stream_options.include_usage`` and read the usage chunk that comes
before ``data: [DONE]``; a stream that ends without ``[DONE]`` is a `StreamCut`.
`passthrough` relays a client's raw body and the upstream answer byte for byte.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from chatkeep.domain.records import Usage
from chatkeep.errors import ProviderUnavailable
from chatkeep.providers.base import ChatRequest, Chunk, PassthroughResponse
from chatkeep.providers.http import (
    HTTPProvider,
    Lines,
    RelayedBody,
    drain,
    excerpt,
    provider_errors,
    raise_for_status,
    stream_cut,
)
from chatkeep.providers.usage import backend_usage

_DONE = "[DONE]"


def chat_completions_url(base_url: str) -> str:
    """The endpoint under a base URL given with or without its ``/v1``."""
    base = base_url.rstrip("/")
    if base.endswith("/v1"):
        base = base[: -len("/v1")]
    return base + "/v1/chat/completions"


def openai_body(model: str, request: ChatRequest) -> dict[str, Any]:
    """The streamed chat-completions body of a request; options go in at the top level."""
    return {
        **request.options,
        "model": model,
        "messages": request.messages,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def _sse_data(line: bytes) -> str | None:
    """The value of a ``data:`` line; None for blank lines, comments and other fields.

    Each data line is taken as a whole event: OpenAI-compatible servers never split
    one JSON object over several data lines, and some omit the blank separator line.
    """
    if not line.startswith(b"data:"):
        return None
    value = line[5:].strip()
    return value.decode("utf-8")


class OpenAIProvider(HTTPProvider):
    """Talks to one OpenAI-compatible server (OpenAI, vLLM, llama.cpp, Ollama's /v1 ...).

    Shares its session as `HTTPProvider` describes.
    """

    supports_passthrough = True

    kind = "openai"

    @staticmethod
    def chat_url(base_url: str) -> str:
        return chat_completions_url(base_url)

    @staticmethod
    def probe_url(base_url: str) -> str:
        return chat_completions_url(base_url).removesuffix("/chat/completions") + "/models"

    async def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        payload = orjson.dumps(openai_body(self.upstream_model, request))
        pieces = 0
        usage: Usage | None = None
        finish_reason: str | None = None
        done = False
        with provider_errors(self._label):
            async with await self.send(payload) as response:
                await raise_for_status(response, self._label)
                async for line in Lines(response):
                    data = _sse_data(line)
                    if data is None or not data:
                        continue
                    if data == _DONE:
                        done = True
                        await drain(response)
                        break
                    event = orjson.loads(data)
                    text, reason, event_usage = self._parse(event)
                    usage = event_usage or usage
                    finish_reason = reason or finish_reason
                    if text:
                        pieces += 1
                        yield Chunk(text)
        if not done:
            raise stream_cut(self._label, "data: [DONE]", pieces)
        # Yielded after the response is released: a consumer that stops here holds nothing.
        yield Chunk("", usage, finish_reason or "stop")

    def _parse(self, event: Any) -> tuple[str, str | None, Usage | None]:
        """The text, finish reason and usage of one chunk (usage rides on its own chunk)."""
        if not isinstance(event, dict):
            raise ProviderUnavailable(f"{self._label}: malformed chunk (not an object)")
        if event.get("error"):
            error = event["error"]
            message = error.get("message", error) if isinstance(error, dict) else error
            raise ProviderUnavailable(f"{self._label} reported: {excerpt(str(message))}")
        usage = self._usage(event.get("usage"))
        choices = event.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return "", None, usage
        choice = choices[0]
        delta = choice.get("delta")
        text = delta.get("content") if isinstance(delta, dict) else None
        reason = choice.get("finish_reason")
        return (
            text if isinstance(text, str) else "",
            reason if isinstance(reason, str) else None,
            usage,
        )

    def _usage(self, value: Any) -> Usage | None:
        # Absent, null (on every chunk but the last, for some servers) or not an object:
        # no usage, so chatkeep's estimate counts the reply.
        if not isinstance(value, dict):
            return None
        return backend_usage(
            value.get("prompt_tokens"), value.get("completion_tokens"), self._label
        )

    async def passthrough(self, body: bytes) -> PassthroughResponse:
        """POST a client's ``body`` upstream and relay the answer as it arrives.

        ``body`` is a chat-completions request naming this provider's model. It goes
        upstream byte for byte, unless the backend knows the model by another name:
        then that name is put in (the one change). Any upstream status is relayed as is;
        only a failure to get an answer at all raises. The answer's body must be read to
        its end or closed with ``body.aclose()``.
        """
        if self.upstream_model != self.model:
            body = self._renamed(body)
        with provider_errors(self._label):
            response = await self.send(body)
        return PassthroughResponse(
            status=response.status,
            content_type=response.headers.get("Content-Type") or "application/json",
            body=RelayedBody(response, self._label),
            retry_after=response.headers.get("Retry-After"),
        )

    def _renamed(self, body: bytes) -> bytes:
        payload = orjson.loads(body)
        payload["model"] = self.upstream_model
        return orjson.dumps(payload)
