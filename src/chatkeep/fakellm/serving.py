"""A fake backend running in this event loop: start it on a port, stop it, read its URL."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from types import TracebackType

from aiohttp import web

from chatkeep.fakellm.config import FakeLLMConfig
from chatkeep.fakellm.server import FakeLLMApp, Sleep

#: Connections waiting to be accepted (the kernel caps it at net.core.somaxconn).
LISTEN_BACKLOG = 2048


def create_app(config: FakeLLMConfig | None = None, *, sleep: Sleep = asyncio.sleep) -> FakeLLMApp:
    """The fake backend's request handler for `config` (defaults: 16 tokens, no faults)."""
    return FakeLLMApp(config or FakeLLMConfig(), sleep=sleep)


@dataclass(slots=True)
class FakeLLMServer:
    """A running fake backend. Stop it with `aclose` (safe twice) or `async with`."""

    app: FakeLLMApp
    host: str
    port: int
    _runner: web.BaseRunner = field(repr=False)
    _closed: bool = field(default=False, repr=False)

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:43127`` (no trailing slash, no ``/v1``)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._runner.cleanup()

    async def __aenter__(self) -> FakeLLMServer:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()


async def start_fake_llm(
    config: FakeLLMConfig | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    sleep: Sleep = asyncio.sleep,
    shutdown_timeout: float = 1.0,
) -> FakeLLMServer:
    """Start a fake backend in this event loop; it accepts requests when this returns.

    ``port=0`` binds a free port, read it from the result. ``shutdown_timeout`` bounds
    how long `aclose` waits for requests still running before cancelling them.
    """
    app = create_app(config, sleep=sleep)
    server = web.Server(app, handler_cancellation=True, access_log=None)
    runner = web.ServerRunner(server, shutdown_timeout=shutdown_timeout, handle_signals=False)
    await runner.setup()
    try:
        # A benchmark opens a thousand streams at once: aiohttp's default backlog (128)
        # would drop connections before the fake backend ever saw them.
        site = web.TCPSite(runner, host, port, backlog=LISTEN_BACKLOG)
        await site.start()
        bound_port = int(runner.addresses[0][1])
    except BaseException:
        await runner.cleanup()
        raise
    return FakeLLMServer(app=app, host=host, port=bound_port, _runner=runner)
