"""Usage reported by backends: taken when sane, dropped (with a warning) when not."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from chatkeep.domain.records import Usage
from chatkeep.providers.base import ChatRequest
from chatkeep.providers.ollama import OllamaProvider
from chatkeep.providers.openai import OpenAIProvider
from chatkeep.providers.usage import MAX_USAGE_TOKENS, backend_usage
from chatkeep.settings import ModelConfig
from tests.providers.conftest import StartRawBackend

REQUEST = ChatRequest([{"role": "user", "content": "hi"}])

#: Counts no reply has: each must be dropped, never stored, never turned into 0.
ABSURD = [
    pytest.param(-1, id="negative"),
    pytest.param(2**63, id="past-int64"),
    pytest.param(2**64 - 1, id="max-uint64"),
    pytest.param(MAX_USAGE_TOKENS + 1, id="past-the-bound"),
    pytest.param(1.5, id="float"),
    pytest.param(1e26, id="huge-float"),
    pytest.param("12", id="string"),
    pytest.param(True, id="bool"),
    pytest.param([3], id="list"),
]


@pytest.mark.parametrize(
    ("prompt", "completion"), [(0, 0), (3, 4), (MAX_USAGE_TOKENS, MAX_USAGE_TOKENS)]
)
def test_sane_counts_are_taken(prompt: int, completion: int) -> None:
    assert backend_usage(prompt, completion, "b") == Usage(prompt, completion)


@pytest.mark.parametrize("value", ABSURD)
def test_absurd_counts_drop_the_usage_with_a_warning(
    value: object, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="chatkeep.providers"):
        assert backend_usage(value, 4, "ollama at http://h") is None
        assert backend_usage(4, value, "ollama at http://h") is None

    assert len(caplog.records) == 2
    assert "ollama at http://h reported an invalid usage" in caplog.records[0].getMessage()


def test_a_huge_integer_is_described_briefly(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="chatkeep.providers"):
        assert backend_usage(10**5000, 1, "b") is None

    message = caplog.records[0].getMessage()
    assert "an integer of 16610 bits" in message
    assert len(message) < 200


def test_a_missing_count_is_no_usage_and_no_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="chatkeep.providers"):
        assert backend_usage(None, 4, "b") is None
        assert backend_usage(3, None, "b") is None

    assert caplog.records == []


def _ndjson_with_usage(prompt: object, completion: object) -> list[bytes]:
    done = {"done": True, "prompt_eval_count": prompt, "eval_count": completion}
    piece = {"message": {"role": "assistant", "content": "hi"}, "done": False}
    return [orjson.dumps(piece) + b"\n", orjson.dumps(done) + b"\n"]


def _sse_with_usage(prompt: object, completion: object) -> list[bytes]:
    piece = {"choices": [{"index": 0, "delta": {"content": "hi"}}]}
    usage = {"choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": completion}}
    return [
        b"data: " + orjson.dumps(piece) + b"\n\n",
        b"data: " + orjson.dumps(usage) + b"\n\n",
        b"data: [DONE]\n\n",
    ]


WIRE_FORMATS = [
    pytest.param("ollama", _ndjson_with_usage, "application/x-ndjson", id="ollama"),
    pytest.param("openai", _sse_with_usage, "text/event-stream", id="openai"),
]


def _provider(kind: str, url: str) -> OllamaProvider | OpenAIProvider:
    if kind == "ollama":
        return OllamaProvider("m", ModelConfig(provider="ollama", url=url))
    return OpenAIProvider("m", ModelConfig(provider="openai", url=url))


@pytest.mark.parametrize(("kind", "answer", "content_type"), WIRE_FORMATS)
async def test_each_wire_format_passes_sane_usage_on(
    raw_backend: StartRawBackend,
    closing: Callable[[Any], Any],
    kind: str,
    answer: Callable[[object, object], list[bytes]],
    content_type: str,
) -> None:
    backend = await raw_backend(answer(7, 1), content_type=content_type)
    provider = closing(_provider(kind, backend.url))

    completion = await provider.complete(REQUEST)

    assert (completion.text, completion.usage) == ("hi", Usage(7, 1))


@pytest.mark.parametrize(("kind", "answer", "content_type"), WIRE_FORMATS)
@pytest.mark.parametrize("value", [-5, 2**63, 1.5, "12"], ids=["negative", "huge", "float", "str"])
async def test_each_wire_format_drops_absurd_usage(
    raw_backend: StartRawBackend,
    closing: Callable[[Any], Any],
    caplog: pytest.LogCaptureFixture,
    kind: str,
    answer: Callable[[object, object], list[bytes]],
    content_type: str,
    value: object,
) -> None:
    backend = await raw_backend(answer(3, value), content_type=content_type)
    provider = closing(_provider(kind, backend.url))

    with caplog.at_level(logging.WARNING, logger="chatkeep.providers"):
        completion = await provider.complete(REQUEST)

    # The reply itself is fine; only its usage is dropped, for chatkeep's estimate.
    assert (completion.text, completion.usage, completion.finish_reason) == ("hi", None, "stop")
    assert [r.getMessage() for r in caplog.records if "invalid usage" in r.getMessage()]
