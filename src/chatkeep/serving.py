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
