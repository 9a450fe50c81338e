"""The uvicorn server of `chatkeep serve`, told about a stop as soon as it is asked for.

uvicorn runs an app's shutdown only once every connection has closed (or its graceful
timeout has passed and it cut them). A reply stream is a connection that stays open while
its reply runs, so the app must learn of the stop at the signal: then its replies get the
grace period to finish, and those still running at its end are stored as incomplete and
their readers get a final ``error`` event (code ``shutdown``) before the connections close.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from types import FrameType

import uvicorn


class GracefulServer(uvicorn.Server):
    """`uvicorn.Server` that calls ``on_stop`` (in the event loop) when asked to stop."""

    def __init__(self, config: uvicorn.Config, *, on_stop: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_stop = on_stop
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        first = not self.should_exit
        super().handle_exit(sig, frame)
        if first and self._loop is not None:
            # A signal handler runs between two bytecodes of whatever was running: hand
            # the work to the loop rather than touching its state from here.
            self._loop.call_soon_threadsafe(self._on_stop)


def bounded_head_protocol(max_bytes: int) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol, refusing a request head (line + headers) over ``max_bytes``.

    httptools keeps a header being received in memory however long it grows (uvicorn sets
    no bound with it; h11's 16 KiB is the slower parser's): a 300 MB ``x-api-key`` took
    the process to 900 MB before any layer of the app could see it. Here the bytes that
    arrive while a head is incomplete are counted after each read, so a head costs at most
    ``max_bytes`` and one read; past that the client gets ``431`` and the connection closes.
    Bodies are not counted: their bound is the body limit's.
    """
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class BoundedHeadProtocol(HttpToolsProtocol):
        _head_bytes = 0
        _in_head = True

        def on_message_begin(self) -> None:
            self._in_head = True
            self._head_bytes = 0
            super().on_message_begin()

        def on_headers_complete(self) -> None:
            self._in_head = False
            super().on_headers_complete()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if not self._in_head or self.transport.is_closing():
                return
            self._head_bytes += len(data)
            if self._head_bytes > max_bytes:
                self._refuse_head()

        def _refuse_head(self) -> None:
            body = (
                b'{"error":{"code":"headers_too_large","message":"the request line and headers '
                + f'are over the limit of {max_bytes} bytes"}}}}'.encode()
            )
            self.transport.write(
                b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
                b"content-type: application/json\r\n"
                + f"content-length: {len(body)}\r\n".encode()
                + b"connection: close\r\n\r\n"
                + body
            )
            self.transport.close()

    return BoundedHeadProtocol
