"""The fake model server's handler: aiohttp's low-level server speaking Ollama and OpenAI.

It is the "direct backend" benchmarks compare chatkeep against, so a request costs as
little as possible: no router, no middleware, no access log, replies encoded with
orjson, and a stream without a per-token delay is written in one piece.

Besides the model routes it has a control surface for tests and benchmarks, never
counted as traffic: ``GET``/``POST /_fake/config`` reads or changes the running
script (see `chatkeep.fakellm.control`), ``GET /_fake/stats`` reads its counters and
``POST /_fake/stats/reset`` reads and zeroes them (see `chatkeep.fakellm.stats`).

The aiohttp low-level server was measured against a raw ASGI app on uvicorn (uvloop +
httptools); both cost about 80 us of server CPU per request, and aiohttp wins on
lifecycle (see `chatkeep.fakellm.serving`): it binds port 0 and is ready when
`start_fake_llm` returns, stops at once, cancels a handler when its client goes away
(the "hang" fault needs that, and it is how a client leaving a stream is counted at
once) and can drop a connection mid-stream without logging an error.
"""

from __future__ import annotations

import asyncio
import collections
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import orjson
from aiohttp import web
from aiohttp.web_request import BaseRequest

from chatkeep.fakellm.config import FakeLLMConfig, Fault, FaultPicker
from chatkeep.fakellm.control import changed_config, config_as_dict
from chatkeep.fakellm.stats import FakeLLMStats
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
    error: Callable[[str, str, float | None], bytes]


_OLLAMA = _Wire(
    name="ollama",
    stream_content_type="application/x-ndjson",
    # Ollama streams unless told `"stream": false`; OpenAI is the other way round.
    stream_default=True,
    encoder=OllamaEncoder,
    error=lambda message, kind, retry_after: ollama_error(message, retry_after),
)
_OPENAI = _Wire(
    name="openai",
    stream_content_type="text/event-stream",
    stream_default=False,
    encoder=OpenAIEncoder,
    error=openai_error,
)


class FakeLLMApp:
    """The request handler; `stats` counts what it has seen.

    ``sleep`` paces tokens, first-token waits and hangs; tests pass a recorder (or a
    gate) instead of waiting.
    """

    def __init__(self, config: FakeLLMConfig, *, sleep: Sleep = asyncio.sleep) -> None:
        self.config = config
        self.stats = FakeLLMStats()
        self._sleep = sleep
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
        self._control: dict[tuple[str, str], Handler] = {
            ("GET", "/_fake/config"): self._get_config,
            ("POST", "/_fake/config"): self._post_config,
            ("GET", "/_fake/stats"): self._get_stats,
            ("POST", "/_fake/stats/reset"): self._reset_stats,
        }

    def configure(self, config: FakeLLMConfig) -> None:
        """Follow ``config`` from the next request on; requests under way keep their script.

        The fault and slowness draws go on where they were, unless the seed changed.
        """
        self._faults.update(config)
        if config.tokens != self.config.tokens:
            self._pieces = default_pieces(config.tokens)
        self.config = config

    @property
    def counts(self) -> collections.Counter[str]:
        """Chat answers by fault (``none`` for normal ones), and ``cut`` streams."""
        counts = collections.Counter(self.stats.faults)
        del counts["down"]  # not a chat answer: the down mode answers before routing
        counts["none"] = self.stats.chat_requests - sum(counts.values())
        counts["cut"] = self.stats.streams_cut
        return +counts  # without the kinds never seen

    async def __call__(self, request: BaseRequest) -> web.StreamResponse:
        route = self._routes.get((request.method, request.path))
        if route is None:
            return await self._unrouted(request)
        stats = self.stats
        stats.requests += 1
        if self.config.down:
            return self._down(request)
        stats.in_flight += 1
        try:
            return await route(request)
        finally:
            stats.in_flight -= 1

    async def _unrouted(self, request: BaseRequest) -> web.StreamResponse:
        """The control routes, and the answers to paths or methods no route takes."""
        path = request.path
        control = path.startswith("/_fake/")
        if control:
            handler = self._control.get((request.method, path))
            if handler is not None:
                return await handler(request)
        else:
            self.stats.requests += 1
            if self.config.down:
                return self._down(request)
        routes = self._control if control else self._routes
        status = 405 if any(known == path for _, known in routes) else 404
        return _error(_wire_of(path), status)

    def _down(self, request: BaseRequest) -> web.StreamResponse:
        self.stats.faults["down"] += 1
        retry_after = self.config.retry_after_seconds
        return _error(_wire_of(request.path), 503, "backend is down", retry_after=retry_after)

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
        # One request follows one script, whatever /_fake/config changes meanwhile.
        config = self.config
        limit = config.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            return _error(wire, 413, f"body over {limit} bytes")
        body = await _read_body(request, limit)
        if body is None:
            return _error(wire, 413, f"body over {limit} bytes")
        try:
            reply = parse_reply(body, config, self._pieces, stream_default=wire.stream_default)
        except BadRequest as exc:
            return _error(wire, 400, str(exc))
        # The draws come after validation so malformed requests do not shift the script,
        # and both are made for every request so neither shifts the other.
        stats = self.stats
        stats.chat_requests += 1
        fault = self._faults.next()
        wait, slow = self._faults.first_token_wait()
        if fault is not Fault.NONE:
            return await self._fault(wire, fault, config)
        if slow:
            stats.slow += 1
        encoder = wire.encoder(reply)
        if not reply.stream:
            pause = wait + config.delay_ms * len(reply.pieces) / 1000.0
            if pause:
                try:
                    await self._sleep(pause)
                except asyncio.CancelledError:
                    stats.disconnected += 1
                    raise
            return web.Response(body=encoder.whole(), content_type=_JSON)
        return await self._stream(request, wire, reply, encoder, config, wait)

    async def _fault(self, wire: _Wire, fault: Fault, config: FakeLLMConfig) -> web.Response:
        self.stats.faults[fault.value] += 1
        if fault is Fault.FAIL:
            return _error(wire, 500, "injected failure")
        if fault is Fault.RATE_LIMIT:
            retry_after = config.retry_after_seconds
            return _error(wire, 429, "injected rate limit", retry_after=retry_after)
        if fault is Fault.UNAVAILABLE:
            retry_after = config.retry_after_seconds
            return _error(wire, 503, "injected unavailability", retry_after=retry_after)
        try:
            # Cancelled as soon as the client disconnects (handler_cancellation).
            await self._sleep(config.hang_seconds)
        except asyncio.CancelledError:
            self.stats.disconnected += 1
            raise
        return _error(wire, 504, "injected hang ended")

    async def _stream(
        self,
        request: BaseRequest,
        wire: _Wire,
        reply: Reply,
        encoder: Encoder,
        config: FakeLLMConfig,
        wait: float,
    ) -> web.StreamResponse:
        stats = self.stats
        stats.streams_started += 1
        response = web.StreamResponse(
            headers={"Content-Type": wire.stream_content_type, "Cache-Control": "no-cache"}
        )
        cut_after = config.cut_after
        pieces = reply.pieces if cut_after is None else reply.pieces[:cut_after]
        delay = config.delay_ms / 1000.0
        try:
            # A stream response sends its headers here, before any wait.
            await response.prepare(request)
            if not delay and not wait:
                # Without a pace to keep, one write is as valid a stream and far cheaper.
                body = encoder.opening() + b"".join(map(encoder.piece, pieces))
                if cut_after is None:
                    await response.write_eof(body + encoder.end())
                    stats.streams_completed += 1
                    return response
                await response.write(body)
            else:
                await _write(response, encoder.opening())
                if wait:
                    await self._sleep(wait)
                if delay:
                    for text in pieces:
                        await self._sleep(delay)
                        await response.write(encoder.piece(text))
                else:
                    await _write(response, b"".join(map(encoder.piece, pieces)))
            if cut_after is not None:
                stats.streams_cut += 1
                _drop_connection(request)
                return response
            await response.write_eof(encoder.end())
        except asyncio.CancelledError:
            # aiohttp cancels the handler the moment the connection is lost.
            stats.streams_disconnected += 1
            stats.disconnected += 1
            raise
        except ConnectionResetError:
            # A write found the connection closed before the cancellation arrived;
            # aiohttp finishes a response whose client is gone quietly.
            stats.streams_disconnected += 1
            stats.disconnected += 1
            return response
        stats.streams_completed += 1
        return response

    async def _get_config(self, request: BaseRequest) -> web.StreamResponse:
        return _json(config_as_dict(self.config))

    async def _post_config(self, request: BaseRequest) -> web.StreamResponse:
        limit = self.config.max_body_bytes
        body = await _read_body(request, limit)
        if body is None:
            return _error(_OPENAI, 413, f"body over {limit} bytes")
        try:
            config = changed_config(self.config, body)
        except BadRequest as exc:
            return _error(_OPENAI, 400, str(exc))
        self.configure(config)
        return _json(config_as_dict(config))

    async def _get_stats(self, request: BaseRequest) -> web.StreamResponse:
        return _json(self.stats.as_dict())

    async def _reset_stats(self, request: BaseRequest) -> web.StreamResponse:
        return _json(self.stats.reset().as_dict())


def _wire_of(path: str) -> _Wire:
    """The wire format of errors on a path that is no chat route."""
    return _OLLAMA if path.startswith("/api/") else _OPENAI


async def _write(response: web.StreamResponse, data: bytes) -> None:
    # Ollama streams have no opening, and a cut may leave no pieces: skip empty writes.
    if data:
        await response.write(data)


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


def _json(data: object) -> web.Response:
    return web.Response(body=orjson.dumps(data), content_type=_JSON)


def _error(
    wire: _Wire, status: int, message: str | None = None, *, retry_after: float | None = None
) -> web.Response:
    """An error in ``wire``'s shape; ``retry_after`` adds ``Retry-After`` and its exact value."""
    text = message or {404: "not found", 405: "method not allowed"}.get(status, "error")
    kind = "server_error" if status >= 500 else "invalid_request_error"
    headers = None
    if retry_after is not None:
        # HTTP's Retry-After is whole seconds: round up so a client that honours it never
        # comes back early. Retry-After-Ms (as OpenAI sends it) keeps the exact value.
        headers = {
            "Retry-After": str(math.ceil(retry_after)),
            "Retry-After-Ms": str(round(retry_after * 1000)),
        }
    return web.Response(
        status=status,
        body=wire.error(text, kind, retry_after),
        content_type=_JSON,
        headers=headers,
    )
