"""Many streamed replies at once over raw sockets, each token's arrival time noted.

Every connection is opened first (in batches: a backend's accept queue is finite, and a
connection refused for that would be retried a second later by the kernel, which is not
what is measured); then every request is written at once, and each reply is read as it
arrives: the HTTP/1.1 chunked framing by hand, server-sent events split on blank lines.
Raw sockets cost this process less per token than an HTTP client library, and what is
measured is the server's pace, not the client's.

A token is the next word of the fake backend's reply (``tok0 tok1 …``), in an OpenAI
chunk (``choices[0].delta.content``, the direct backend and the passthrough) or a
``delta`` event (the durable send; one event may carry several). A word out of order or
with other text counts as wrong; the end is ``data: [DONE]`` or ``event: done``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import orjson

#: Connections opened at once while setting up.
CONNECT_BATCH = 100


@dataclass
class StreamTrace:
    """One reply as the client saw it (times from `time.perf_counter`)."""

    sent: float = 0.0
    arrivals: list[float] = field(default_factory=list)
    wrong: int = 0
    ended: bool = False
    failure: str | None = None


@dataclass(frozen=True)
class StreamRequest:
    """Where the streams go and what each one sends."""

    host: str
    port: int
    paths: Sequence[str]
    """One path per stream (the durable send names a conversation in it)."""
    body: bytes
    durable: bool

    def head(self, path: str) -> bytes:
        return (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            "Content-Type: application/json\r\nAccept: text/event-stream\r\n"
            f"Content-Length: {len(self.body)}\r\n\r\n"
        ).encode() + self.body


def token_text(event: bytes, durable: bool) -> str | None:
    """The text of a token event, ``None`` for any other event."""
    if durable:
        if not event.startswith(b"event: delta") and b"\nevent: delta" not in event:
            return None
        data = event[event.index(b"data: ") + 6 :]
        text = orjson.loads(data).get("text")
        return text if isinstance(text, str) else None
    if b'"content":"' not in event or not event.startswith(b"data: {"):
        return None
    choices = orjson.loads(event[6:]).get("choices") or [{}]
    text = (choices[0].get("delta") or {}).get("content")
    return text or None


def is_end(event: bytes, durable: bool) -> bool:
    """Whether an event ends the reply (an error event ends it too)."""
    if durable:
        return b"event: done" in event or b"event: error" in event
    return event.startswith(b"data: [DONE]") or event.startswith(b'data: {"error"')


async def read_reply(
    reader: asyncio.StreamReader, trace: StreamTrace, durable: bool, tokens: int
) -> None:
    """Read one HTTP/1.1 chunked reply of server-sent events into ``trace``."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = head.split(b" ", 2)[1]
    if status != b"200":
        trace.failure = f"status_{status.decode()}"
        return
    if b"transfer-encoding: chunked" not in head.lower():
        trace.failure = "not_chunked"
        return
    pending = b""
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        data = await reader.readexactly(size + 2)
        if size == 0:
            trace.failure = None if trace.ended else "cut"
            return
        now = time.perf_counter()
        pending += data[:-2]
        *events, pending = pending.replace(b"\r\n", b"\n").split(b"\n\n")
        for event in events:
            text = token_text(event, durable)
            if text is not None:
                # A reply stream may hand a reader that fell behind several pieces in
                # one event: each token counts, all arrived now.
                for word in text.split():
                    if word == f"tok{len(trace.arrivals)}" and len(trace.arrivals) < tokens:
                        trace.arrivals.append(now)
                    else:
                        trace.wrong += 1
            elif is_end(event, durable):
                trace.ended = b"error" not in event
                if not trace.ended:
                    trace.failure = "error_event"
                return


async def run_streams(
    request: StreamRequest, *, tokens: int, reply_seconds: float
) -> list[StreamTrace]:
    """Open one connection per path, send every request at once, read every reply."""
    traces = [StreamTrace() for _ in request.paths]
    connections: list[tuple[asyncio.StreamReader, asyncio.StreamWriter] | None] = []
    try:
        for start in range(0, len(request.paths), CONNECT_BATCH):
            batch = request.paths[start : start + CONNECT_BATCH]
            opened = await asyncio.gather(
                *(asyncio.open_connection(request.host, request.port) for _ in batch),
                return_exceptions=True,
            )
            for index, item in enumerate(opened):
                if isinstance(item, BaseException):
                    traces[start + index].failure = f"connect_{type(item).__name__}"
                    connections.append(None)
                else:
                    connections.append(item)
            await asyncio.sleep(0.05)  # let the server accept them
        await asyncio.sleep(0.3)

        async def one(index: int) -> None:
            connection = connections[index]
            if connection is None:
                return
            reader, writer = connection
            trace = traces[index]
            trace.sent = time.perf_counter()
            writer.write(request.head(request.paths[index]))
            try:
                async with asyncio.timeout(reply_seconds):
                    await read_reply(reader, trace, request.durable, tokens)
            except TimeoutError:
                trace.failure = "timeout"
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                trace.failure = type(exc).__name__

        await asyncio.gather(*(one(index) for index in range(len(traces))))
    finally:
        for connection in connections:
            if connection is not None:
                connection[1].close()
                with contextlib.suppress(OSError):
                    await connection[1].wait_closed()
    return traces
