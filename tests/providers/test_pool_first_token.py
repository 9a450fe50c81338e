"""Where a relayed answer's first token is: past a stream's opening, never past its text."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from chatkeep.errors import StreamCut
from chatkeep.providers.first_token import carries_a_token, read_first_token
from tests.providers.pool_backends import OPENING, sse_piece

SSE = "text/event-stream"


class Chunks:
    """A body that hands out ``parts`` one read at a time and counts the reads."""

    def __init__(self, parts: list[bytes]) -> None:
        self._parts = list(parts)
        self.reads = 0

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        if not self._parts:
            raise StopAsyncIteration
        self.reads += 1
        return self._parts.pop(0)


def event(payload: Any) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def delta(**fields: Any) -> bytes:
    return event({"choices": [{"index": 0, "delta": fields, "finish_reason": None}]})


async def test_a_stream_is_read_up_to_its_first_text_and_no_further() -> None:
    text = sse_piece("Hello")
    parts = [
        OPENING,
        b": ping\r\n\r\n",
        text[:20],
        text[20:],
        sse_piece(" world"),
        b"data: [DONE]\n\n",
    ]
    body = Chunks(parts)

    first = await read_first_token(body, SSE, "b0")

    assert first == b"".join(parts[:4])  # unchanged, the event split over two reads
    assert body.reads == 4
    assert b"".join([first, *[chunk async for chunk in body]]) == b"".join(parts)


@pytest.mark.parametrize(
    "opening",
    [
        delta(role="assistant", content=""),
        delta(role="assistant", content=None, refusal=None, tool_calls=[]),
        event({"choices": [], "prompt_filter_results": [{"prompt_index": 0}]}),  # Azure
        event({"choices": [{"index": 0, "delta": {}, "content_filter_results": {}}]}),
        b": keep-alive\n\n",
        b"event: ping\nid: 1\nretry: 100\n\n",
        b"data:\n\n",
    ],
)
def test_an_opening_carries_no_token(opening: bytes) -> None:
    assert not carries_a_token(opening)


@pytest.mark.parametrize(
    "token",
    [
        delta(content="hi"),
        delta(role="assistant", content="hi"),  # the role and text in one chunk
        delta(tool_calls=[{"index": 0, "function": {"name": "f", "arguments": ""}}]),
        delta(reasoning_content="thinking"),
        event({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
        event({"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 0}}),
        event({"error": {"message": "overloaded"}}),
        event({"choices": [{"index": 0, "text": "legacy"}]}),
        event({"something": "else"}),  # a shape not known is relayed at once
        b"data: not json\n\n",
        b"data: [DONE]\n\n",
        b"data:[DONE]\r\n",
    ],
)
def test_anything_but_an_opening_is_a_first_token(token: bytes) -> None:
    assert carries_a_token(token)


async def test_a_line_is_judged_only_once_it_is_complete() -> None:
    whole = delta(content="hi")
    body = Chunks([whole[:-2], b"", whole[-2:]])  # the newline arrives last

    assert await read_first_token(body, SSE, "b0") == whole
    assert body.reads == 3


async def test_a_stream_ending_before_its_first_token_is_cut() -> None:
    with pytest.raises(StreamCut, match="b0: the stream ended before its first token"):
        await read_first_token(Chunks([OPENING, b": bye\n\n"]), SSE, "b0")


async def test_the_read_is_bounded() -> None:
    pings = [b": keep-alive\n\n"] * 100
    body = Chunks([*pings, delta(content="late")])

    first = await read_first_token(body, SSE, "b0", limit=140)

    assert first == b"".join(pings[:10])  # the bound reached: taken as it is, as before
    assert body.reads == 10


async def test_a_json_answer_starts_with_its_first_bytes() -> None:
    body = Chunks([b'{"choices": [', b"]}"])

    assert await read_first_token(body, "application/json", "b0") == b'{"choices": ['
    assert await read_first_token(Chunks([]), "application/json", "b0") is None
    assert body.reads == 1
