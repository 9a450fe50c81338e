"""Streamed replies over raw sockets whose readers read slowly or not at all.

Each connection sends ``POST /api/conversations/{id}/messages`` with ``"stream": true``
and then either reads a few bytes every ``pause`` seconds (a slow reader) or reads nothing
(a stalled one). The client sockets get a small receive buffer, so the kernel cannot hide
a slow reader from the server by buffering the whole reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from memory_clients import dumps

#: Connections opened at once while setting up (the server's accept backlog is finite).
CONNECT_BATCH = 100


@dataclass(frozen=True)
class StreamLoad:
    """How the streams are opened and read."""

    url: str
    text: str
    slow_share: float = 0.5
    read_bytes: int = 32
    pause: float = 0.1
    receive_buffer: int = 4096


@dataclass
class OpenedStreams:
    """What the clients saw."""

    opened: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    slow: int = 0
    stalled: int = 0
    bytes_read: int = 0
    status_lines: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-able view."""
        return {
            "opened": self.opened,
            "failed": dict(self.failed),
            "slow_readers": self.slow,
            "stalled_readers": self.stalled,
            "bytes_read_by_slow_readers": self.bytes_read,
            "status_lines": dict(self.status_lines),
        }


def _request(host: str, conversation_id: str, text: str) -> bytes:
    body = dumps({"content": text, "stream": True}).encode()
    head = (
        f"POST /api/conversations/{conversation_id}/messages HTTP/1.1\r\n"
        f"Host: {host}\r\nContent-Type: application/json\r\nAccept: text/event-stream\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _connect(
    load: StreamLoad, host: str, port: int
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, load.receive_buffer)
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, (host, port))
    except BaseException:
        sock.close()
        raise
    return await asyncio.open_connection(sock=sock, limit=load.receive_buffer)


async def _read_slowly(reader: asyncio.StreamReader, load: StreamLoad, seen: OpenedStreams) -> None:
    """Read ``read_bytes`` every ``pause`` seconds until the server closes (or cancelled)."""
    first = b""
    while True:
        chunk = await reader.read(load.read_bytes)
        if not chunk:
            return
        seen.bytes_read += len(chunk)
        if b"\r\n" not in first and len(first) < 64:
            first += chunk
            if b"\r\n" in first:
                seen.status_lines[first.split(b"\r\n", 1)[0].decode(errors="replace")] += 1
        await asyncio.sleep(load.pause)


@contextlib.asynccontextmanager
async def open_streams(load: StreamLoad, ids: Sequence[str]) -> AsyncIterator[OpenedStreams]:
    """Open one streamed send per conversation; close them all when the block ends."""
    host, port = load.url.removeprefix("http://").split(":")
    seen = OpenedStreams()
    writers: list[asyncio.StreamWriter] = []
    readers: list[asyncio.Task[None]] = []
    slow_every = round(1 / load.slow_share) if load.slow_share > 0 else 0

    async def open_one(index: int, conversation_id: str) -> None:
        try:
            reader, writer = await _connect(load, host, int(port))
            writer.write(_request(host, conversation_id, load.text))
            await writer.drain()
        except OSError as exc:
            seen.failed[type(exc).__name__] += 1
            return
        writers.append(writer)
        seen.opened += 1
        if slow_every and index % slow_every == 0:
            seen.slow += 1
            readers.append(asyncio.create_task(_read_slowly(reader, load, seen)))
        else:
            seen.stalled += 1

    try:
        for start in range(0, len(ids), CONNECT_BATCH):
            batch = ids[start : start + CONNECT_BATCH]
            await asyncio.gather(*(open_one(start + n, cid) for n, cid in enumerate(batch)))
        yield seen
    finally:
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        for writer in writers:
            writer.close()
