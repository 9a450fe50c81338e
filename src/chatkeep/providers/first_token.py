"""Where a relayed answer's first token is, for a provider pool's ``/v1`` passthrough.

A pool retries and hedges only before a reply's first token, and times that token for
health and adaptive hedging; a relayed answer must therefore be read up to it. The
answer's first bytes are not it: an OpenAI-compatible stream sends its headers and an
opening chunk that carries only the role (``{"delta": {"role": "assistant", "content":
""}}``) before the model has produced anything, some servers send SSE comments
(``: keep-alive``) while a request waits, and Azure opens with a chunk of content-filter
results and no choices. Taken as the first token, they made a slow first token look
fast (no hedge fired, the time to first token read 1 to 2 ms while clients waited 10
to 400 ms) and put a backend that died before its text past the point of failover.

So for a ``text/event-stream`` answer, `read_first_token` reads up to the first event
that carries anything: text, a tool call, reasoning, a finish reason, usage, an error,
``[DONE]``, or any event whose shape it does not know (an unknown shape is relayed at
once rather than held back). It returns every byte read, unchanged, for the relay to
send first; the rest follows as it arrives, so the relay stays byte for byte. A stream
that ends before such an event is a `StreamCut` (retried like any cut before the first
token). The read is bounded: past `FIRST_TOKEN_SCAN_BYTES` without one, what was read
is taken as the first token, as before. It runs inside the attempt, so the attempt's
timeout bounds it. A JSON answer's first bytes stay its first token: it has no opening.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from chatkeep.errors import StreamCut

#: The most read before a first token: far above an opening chunk (about 200 bytes) and
#: thousands of keep-alive comments, and small enough to hold per reply in flight.
FIRST_TOKEN_SCAN_BYTES = 64 * 1024

_DONE = b"[DONE]"


def is_event_stream(content_type: str) -> bool:
    """Is an answer of this ``Content-Type`` an SSE stream?"""
    return content_type.split(";", 1)[0].strip().lower() == "text/event-stream"


async def read_first_token(
    body: AsyncIterator[bytes],
    content_type: str,
    backend: str,
    limit: int = FIRST_TOKEN_SCAN_BYTES,
) -> bytes | None:
    """The bytes of ``body`` up to and including its first token (see the module doc).

    None when a non-stream body is empty. Raises `StreamCut` when an event stream ends
    before its first token, and whatever reading ``body`` raises.
    """
    if not is_event_stream(content_type):
        return await anext(body, None)
    read = b""
    scanned = 0  # bytes of ``read`` already split into lines and judged
    while True:
        chunk = await anext(body, None)
        if chunk is None:
            raise StreamCut(f"{backend}: the stream ended before its first token")
        read += chunk
        end = read.rfind(b"\n") + 1
        if end > scanned:
            if carries_a_token(read[scanned:end]):
                return read
            scanned = end
        if len(read) >= limit:
            return read


def carries_a_token(lines: bytes) -> bool:
    """Does any complete SSE line in ``lines`` start the reply's content?"""
    for raw in lines.split(b"\n"):
        line = raw.rstrip(b"\r")
        if not line.startswith(b"data:"):
            continue  # blank separators, ``:`` comments, ``event:``/``id:``/``retry:``
        value = line[5:].strip()
        if not value:
            continue
        if value == _DONE:
            return True
        try:
            event = orjson.loads(value)
        except orjson.JSONDecodeError:
            return True  # not ours to judge: the client reads it as it is
        if not _opening(event):
            return True
    return False


def _opening(event: Any) -> bool:
    """An event that carries nothing yet: only a role, empty fields, or no choices at all.

    Every other shape counts as content, so a server whose events look different is
    relayed at once rather than buffered. (Plain loops: this runs on every relayed
    stream, and a generator expression costs more than the rest of the test.)
    """
    if not isinstance(event, dict) or event.get("error") or event.get("usage"):
        return False
    choices = event.get("choices")
    if not isinstance(choices, list):
        return False
    for choice in choices:
        if not isinstance(choice, dict):
            return False
        for key, value in choice.items():
            if not value or key == "index":
                continue  # an empty delta, no finish reason yet, null logprobs…
            if key != "delta" or not isinstance(value, dict):
                return False  # a finish reason, logprobs, a legacy "text"…
            for name, part in value.items():
                if part and name != "role":
                    return False
    return True
