"""The fake backend's replies, encoded in the Ollama and OpenAI wire formats.

Everything here is pure: it turns a request body into a `Reply` and a `Reply` into
bytes, so the server module only decides *when* to write what.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from chatkeep.domain.tokens import estimate_tokens
from chatkeep.fakellm.config import FakeLLMConfig

OPENAI_DONE = b"data: [DONE]\n\n"

_request_ids = itertools.count(1)


class BadRequest(ValueError):
    """The request body is not a chat request this fake understands."""


@dataclass(slots=True)
class Reply:
    """One answer: its pieces (one per token) and what it is billed."""

    model: str
    pieces: list[str]
    prompt_tokens: int
    stream: bool
    include_usage: bool

    @property
    def text(self) -> str:
        return "".join(self.pieces)


class Encoder(Protocol):
    """Turns one `Reply` into wire bytes, whole or as a stream."""

    def whole(self) -> bytes: ...
    def opening(self) -> bytes: ...
    def piece(self, text: str) -> bytes: ...
    def end(self) -> bytes: ...


def default_pieces(count: int) -> list[str]:
    """``tok0 tok1 ... tok{count-1}``, one piece per token, each but the last with its space."""
    return [f"tok{index} " for index in range(count - 1)] + [f"tok{count - 1}"]


def _echo_pieces(messages: list[Any], count: int) -> list[str] | None:
    last_user = next(
        (
            m.get("content")
            for m in reversed(messages)
            if isinstance(m, dict) and m.get("role") == "user"
        ),
        None,
    )
    words = last_user.split() if isinstance(last_user, str) else []
    if not words:
        return None
    cycled = [words[index % len(words)] for index in range(count)]
    return [word + " " for word in cycled[:-1]] + [cycled[-1]]


def parse_reply(
    body: bytes, config: FakeLLMConfig, pieces: list[str], *, stream_default: bool
) -> Reply:
    """Read a chat request body; ``pieces`` is the reply used when not echoing."""
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"body is not JSON: {exc}") from None
    if not isinstance(request, dict):
        raise BadRequest("body must be a JSON object")
    messages = request.get("messages")
    if not isinstance(messages, list):
        raise BadRequest("'messages' must be a list")
    model = request.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("'model' must be a non-empty string")
    prompt_tokens = sum(
        estimate_tokens(m["content"])
        for m in messages
        if isinstance(m, dict) and isinstance(m.get("content"), str)
    )
    if config.echo:
        pieces = _echo_pieces(messages, config.tokens) or pieces
    stream_options = request.get("stream_options")
    include_usage = isinstance(stream_options, dict) and bool(stream_options.get("include_usage"))
    return Reply(
        model=model,
        pieces=pieces,
        prompt_tokens=prompt_tokens,
        stream=bool(request.get("stream", stream_default)),
        include_usage=include_usage,
    )


# -- OpenAI chat completions -------------------------------------------------------------


class OpenAIEncoder:
    """Encodes one reply as a chat completion or as SSE chunks."""

    __slots__ = ("_created", "_id", "_reply")

    def __init__(self, reply: Reply) -> None:
        self._reply = reply
        self._id = f"chatcmpl-fake-{next(_request_ids)}"
        self._created = int(time.time())

    def _usage(self) -> dict[str, int]:
        prompt, completion = self._reply.prompt_tokens, len(self._reply.pieces)
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }

    def whole(self) -> bytes:
        """The whole answer of a non-streamed request."""
        return orjson.dumps(
            {
                "id": self._id,
                "object": "chat.completion",
                "created": self._created,
                "model": self._reply.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": self._reply.text},
                        "finish_reason": "stop",
                    }
                ],
                "usage": self._usage(),
            }
        )

    def _chunk(self, delta: dict[str, str], finish_reason: str | None) -> bytes:
        chunk: dict[str, Any] = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._reply.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }
        if self._reply.include_usage:
            chunk["usage"] = None
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    def opening(self) -> bytes:
        """The opening chunk: the role, no text (as OpenAI sends it)."""
        return self._chunk({"role": "assistant", "content": ""}, None)

    def piece(self, text: str) -> bytes:
        return self._chunk({"content": text}, None)

    def end(self) -> bytes:
        """The finish chunk, the usage chunk when asked for, and ``[DONE]``."""
        tail = self._chunk({}, "stop")
        if self._reply.include_usage:
            usage_chunk = {
                "id": self._id,
                "object": "chat.completion.chunk",
                "created": self._created,
                "model": self._reply.model,
                "choices": [],
                "usage": self._usage(),
            }
            tail += b"data: " + orjson.dumps(usage_chunk) + b"\n\n"
        return tail + OPENAI_DONE


def openai_error(message: str, kind: str, retry_after: float | None = None) -> bytes:
    """OpenAI's error object; ``retry_after`` (seconds) rides along at the top level."""
    error: dict[str, Any] = {"error": {"message": message, "type": kind, "code": None}}
    if retry_after is not None:
        error["retry_after_seconds"] = retry_after
    return orjson.dumps(error)


def openai_models(config: FakeLLMConfig) -> bytes:
    return orjson.dumps(
        {
            "object": "list",
            "data": [
                {"id": name, "object": "model", "created": 0, "owned_by": "fakellm"}
                for name in config.models
            ],
        }
    )


# -- Ollama /api/chat ----------------------------------------------------------------------


class OllamaEncoder:
    """Encodes one reply as a single object or as NDJSON lines."""

    __slots__ = ("_created_at", "_reply", "_started")

    def __init__(self, reply: Reply) -> None:
        self._reply = reply
        self._started = time.perf_counter_ns()
        self._created_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

    def _message(self, content: str, done: bool) -> dict[str, Any]:
        return {
            "model": self._reply.model,
            "created_at": self._created_at,
            "message": {"role": "assistant", "content": content},
            "done": done,
        }

    def _final(self, content: str) -> dict[str, Any]:
        final = self._message(content, True)
        final["done_reason"] = "stop"
        final["total_duration"] = time.perf_counter_ns() - self._started
        final["prompt_eval_count"] = self._reply.prompt_tokens
        final["eval_count"] = len(self._reply.pieces)
        return final

    def whole(self) -> bytes:
        """The whole answer of a non-streamed request."""
        return orjson.dumps(self._final(self._reply.text))

    def opening(self) -> bytes:
        """Ollama streams start straight with text."""
        return b""

    def piece(self, text: str) -> bytes:
        return orjson.dumps(self._message(text, False)) + b"\n"

    def end(self) -> bytes:
        """The terminal line: ``done: true`` with the token counts."""
        return orjson.dumps(self._final("")) + b"\n"


def ollama_error(message: str, retry_after: float | None = None) -> bytes:
    """Ollama's error object; ``retry_after`` (seconds) rides along at the top level."""
    error: dict[str, Any] = {"error": message}
    if retry_after is not None:
        error["retry_after_seconds"] = retry_after
    return orjson.dumps(error)


def ollama_tags(config: FakeLLMConfig) -> bytes:
    return orjson.dumps(
        {
            "models": [
                {
                    "name": name,
                    "model": name,
                    "modified_at": "1970-01-01T00:00:00Z",
                    "size": 0,
                    "digest": "0" * 64,
                    "details": {"format": "fake", "family": "fake"},
                }
                for name in config.models
            ]
        }
    )
