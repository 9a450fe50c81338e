"""The fake model server: a tiny aiohttp low-level server speaking Ollama and OpenAI.

It is the "direct backend" benchmarks compare chatkeep against, so a request costs as
little as possible: no router, no middleware, no access log, replies encoded with
orjson, and a stream without a per-token delay is written in one piece.

The aiohttp low-level server was measured against a raw ASGI app on uvicorn (uvloop +
httptools); both cost about 80 us of server CPU per request, and aiohttp wins on
lifecycle: it binds port 0 and is ready when `start_fake_llm` returns, stops at once,
cancels a handler when its client goes away (the "hang" fault needs that) and can
drop a connection mid-stream without logging an error.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType

from aiohttp import web
from aiohttp.web_request import BaseRequest

from chatkeep.fakellm.config import FakeLLMConfig, Fault, FaultPicker
from chatkeep.fakellm.wire import (
    BadRequest,
    Encoder,
    OllamaEncoder,
    OpenAIEncoder,
    Reply,
    default_pieces,
    ollama_error,
    ollama_tags,
    openai_error,
    openai_models,
    parse_reply,
)

_JSON = "application/json"

Handler = Callable[[BaseRequest], Awaitable[web.StreamResponse]]
Sleep = Callable[[float], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class _Wire:
    """What differs between the two wire formats."""

    name: str
    stream_content_type: str
    stream_default: bool
    encoder: Callable[[Reply], Encoder]
    error: Callable[[str, str], bytes]


_OLLAMA = _Wire(
    name="ollama",
    stream_content_type="application/x-ndjson",
    # Ollama streams unless told `"stream": false`; OpenAI is the other way round.
    stream_default=True,
    encoder=OllamaEncoder,
    error=lambda message, kind: ollama_error(message),
)
_OPENAI = _Wire(
    name="openai",
    stream_content_type="text/event-stream",
    stream_default=False,
    encoder=OpenAIEncoder,
    error=openai_error,
)


class FakeLLMApp:
    """The request handler. `counts` tallies answers by kind, for tests and reports.

    ``sleep`` paces tokens and hangs; tests pass a recorder instead of waiting.
    """

    def __init__(self, config: FakeLLMConfig, *, sleep: Sleep = asyncio.sleep) -> None:
        self.config = config
        self._sleep = sleep
        self.counts: collections.Counter[str] = collections.Counter()
        self._faults = FaultPicker(config)
        self._pieces = default_pieces(config.tokens)
        self._routes: dict[tuple[str, str], Handler] = {
            ("POST", "/api/chat"): self._ollama_chat,
            ("POST", "/v1/chat/completions"): self._openai_chat,
            ("POST", "/chat/completions"): self._openai_chat,
            ("GET", "/api/tags"): self._ollama_tags,
            ("GET", "/v1/models"): self._openai_models,
            ("GET", "/"): self._root,
        }

    async def __call__(self, request: BaseRequest) -> web.StreamResponse:
        route = self._routes.get((request.method, request.path))
        if route is None:
            known = any(path == request.path for _, path in self._routes)
            status = 405 if known else 404
            return _error(_OLLAMA if request.path.startswith("/api/") else _OPENAI, status)
        return await route(request)

    async def _root(self, request: BaseRequest) -> web.StreamResponse:
        return web.Response(text="fakellm is running")

    async def _ollama_tags(self, request: BaseRequest) -> web.StreamResponse:
        return web.Response(body=ollama_tags(self.config), content_type=_JSON)

    async def _openai_models(self, request: BaseRequest) -> web.StreamResponse:
        return web.Response(body=openai_models(self.config), content_type=_JSON)

    async def _ollama_chat(self, request: BaseRequest) -> web.StreamResponse:
        return await self._chat(request, _OLLAMA)

    async def _openai_chat(self, request: BaseRequest) -> web.StreamResponse:
        return await self._chat(request, _OPENAI)

    async def _chat(self, request: BaseRequest, wire: _Wire) -> web.StreamResponse:
        limit = self.config.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            return _error(wire, 413, f"body over {limit} bytes")
        body = await _read_body(request, limit)
        if body is None:
            return _error(wire, 413, f"body over {limit} bytes")
        try:
            reply = parse_reply(body, self.config, self._pieces, stream_default=wire.stream_default)
        except BadRequest as exc:
            return _error(wire, 400, str(exc))
        # The draw comes after validation so malformed requests do not shift the script.
        fault = self._faults.next()
        self.counts[fault.value] += 1
        if fault is Fault.FAIL:
            return _error(wire, 500, "injected failure")
        if fault is Fault.RATE_LIMIT:
            return _error(wire, 429, "injected rate limit", retry_after=1)
        if fault is Fault.HANG:
            # Cancelled as soon as the client disconnects (handler_cancellation).
            await self._sleep(self.config.hang_seconds)
            return _error(wire, 504, "injected hang ended")
        encoder = wire.encoder(reply)
        if not reply.stream:
            if self.config.delay_ms:
                await self._sleep(self.config.delay_ms * len(reply.pieces) / 1000.0)
            return web.Response(body=encoder.whole(), content_type=_JSON)
        return await self._stream(request, wire, reply, encoder)

    async def _stream(
        self, request: BaseRequest, wire: _Wire, reply: Reply, encoder: Encoder
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": wire.stream_content_type, "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        cut_after = self.config.cut_after
        pieces = reply.pieces if cut_after is None else reply.pieces[:cut_after]
        delay = self.config.delay_ms / 1000.0
        if not delay:
            # Without a pace to keep, one write is as valid a stream and far cheaper.
            body = encoder.opening() + b"".join(map(encoder.piece, pieces))
            if cut_after is None:
                await response.write_eof(body + encoder.end())
                return response
            await response.write(body)
        else:
            await response.write(encoder.opening())
            for text in pieces:
                await self._sleep(delay)
                await response.write(encoder.piece(text))
        if cut_after is not None:
            self.counts["cut"] += 1
            _drop_connection(request)
            return response
        await response.write_eof(encoder.end())
        return response


async def _read_body(request: BaseRequest, limit: int) -> bytes | None:
    """The request body, or None once it grows past ``limit`` (chunked bodies have no length)."""
    body = bytearray()
    while chunk := await request.content.readany():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def _drop_connection(request: BaseRequest) -> None:
    """Close the socket after the bytes already written, so the chunked body never ends."""
    transport = request.transport
    if transport is not None:
        transport.close()


def _error(
    wire: _Wire, status: int, message: str | None = None, *, retry_after: int | None = None
) -> web.Response:
    text = message or {404: "not found", 405: "method not allowed"}.get(status, "error")
    kind = "server_error" if status >= 500 else "invalid_request_error"
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return web.Response(
        status=status, body=wire.error(text, kind), content_type=_JSON, headers=headers
    )


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
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_port = int(runner.addresses[0][1])
    except BaseException:
        await runner.cleanup()
        raise
    return FakeLLMServer(app=app, host=host, port=bound_port, _runner=runner)
