"""What a soak sends: chatkeep conversation messages or OpenAI chat completions.

A target owns a fixed number of *lanes*. A lane carries at most one request at a time, so
a chatkeep conversation never sees two sends at once (that would be a legitimate ``409``,
not a failure of the server). A target measures its own request, because only it knows
when the first token of a stream arrived; failures come back as an error *class*
(``http_503``, ``timeout``, ``connect``, ``stream_error``…), never as an exception.
"""

from __future__ import annotations

import time
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Protocol

import aiohttp
import orjson

from chatkeep.soak.config import SoakConfig

_JSON_HEADERS = {"Content-Type": "application/json"}
#: Longest SSE line accepted (a whole reply in one ``done`` event fits many times over).
_MAX_SSE_LINE = 8 * 1024 * 1024
#: After these, the server may still be busy with the lane's conversation (a reply it goes
#: on generating for a client that left): the lane opens a fresh one rather than collect 409s.
_ROTATE_AFTER = frozenset({"timeout", "connect", "disconnected", "stream_error", "http_409"})


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of one request: ``error`` is ``None`` on success."""

    latency: float
    """Seconds from sending the request to the end of the reply."""
    error: str | None = None
    """Error class, e.g. ``http_503``, ``timeout``, ``connect``, ``stream_error``."""
    ttft: float | None = None
    """Seconds to the first token of a streamed reply."""
    detail: str | None = None
    """A short human-readable reason for an error."""


class ProtocolViolation(Exception):
    """The server answered 2xx but not in the shape the protocol promises."""


class StreamFailed(Exception):
    """A stream reported an error or ended before its final event."""


class Target(Protocol):
    """Something a soak can send requests to, one at a time per lane."""

    description: str
    """A short label for reports, e.g. ``chatkeep http://127.0.0.1:8350``."""

    async def send(self, lane: int, number: int) -> Outcome:
        """Send request ``number`` on ``lane``; never raises for request failures."""
        ...

    def stats(self) -> dict[str, int]:
        """Counters worth reporting (e.g. conversations created)."""
        ...


def error_class(exc: BaseException) -> str:
    """Map an exception raised by a request to a stable, bounded error class."""
    if isinstance(exc, StreamFailed | aiohttp.ClientPayloadError):
        return "stream_error"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"http_{exc.status}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "disconnected"
    if isinstance(exc, aiohttp.ClientConnectorError | ConnectionError):
        return "connect"
    if isinstance(exc, ProtocolViolation | ValueError):
        # orjson.JSONDecodeError is a ValueError: a body that is not the promised JSON.
        return "protocol"
    if isinstance(exc, aiohttp.ClientError | OSError):
        return "client_error"
    return "other"


def _headers(config: SoakConfig, *, stream: bool) -> dict[str, str]:
    headers = dict(_JSON_HEADERS)
    if config.api_key:
        headers["Authorization"] = f"Bearer {config.api_key}"
    if stream:
        headers["Accept"] = "text/event-stream"
    return headers


async def _http_error(response: aiohttp.ClientResponse, started: float) -> Outcome | None:
    """The failed outcome of an error status, ``None`` for a 2xx answer.

    The error body is read to its end so that the connection goes back to the pool.
    """
    if response.status < 300:
        return None
    body = await response.read()
    detail = body[:200].decode("utf-8", "replace")
    return Outcome(time.perf_counter() - started, f"http_{response.status}", detail=detail)


class _SSEReader:
    """Server-Sent Events as ``(event, data)`` pairs.

    Bytes are read as they arrive and split into lines in bulk: reading line by line costs
    an await per line, which made the client, not the server, the limit on fast streams.
    """

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._content = response.content
        self._partial = b""
        self._event = "message"
        self._data: list[bytes] = []
        self._ready: deque[tuple[str, bytes]] = deque()
        self._eof = False

    def __aiter__(self) -> _SSEReader:
        return self

    async def __anext__(self) -> tuple[str, bytes]:
        while not self._ready:
            if self._eof:
                raise StopAsyncIteration
            chunk = await self._content.readany()
            if chunk:
                self._feed(chunk)
                continue
            self._eof = True
            # A last event without its blank line still counts, as browsers count it.
            if self._partial:
                self._line(self._partial)
            self._dispatch()
        return self._ready.popleft()

    def _feed(self, chunk: bytes) -> None:
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()
        if len(self._partial) > _MAX_SSE_LINE:
            # The client's memory is bounded too, whatever the server sends.
            raise ProtocolViolation(f"an SSE line over {_MAX_SSE_LINE} bytes")
        for line in lines:
            self._line(line)

    def _line(self, line: bytes) -> None:
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line:
            self._dispatch()
        elif line.startswith(b"data:"):
            value = line[5:]
            self._data.append(value[1:] if value.startswith(b" ") else value)
        elif line.startswith(b"event:"):
            self._event = line[6:].strip().decode("utf-8", "replace")
        # id:, retry: and comments do not matter to a load generator.

    def _dispatch(self) -> None:
        if self._data:
            self._ready.append((self._event, b"\n".join(self._data)))
        self._event = "message"
        self._data = []


def _message_text(config: SoakConfig, number: int) -> str:
    return config.message.replace("{n}", str(number))


@dataclass(slots=True)
class _Lane:
    conversation_id: str | None = None
    sent: int = 0


class ChatkeepTarget:
    """Conversations on a chatkeep server: one per lane, renewed every K messages if asked.

    Opening a conversation is not part of the measured latency: it happens before the
    message's clock starts. A lane whose request timed out or lost its connection starts a
    new conversation, since the server may still be finishing the old reply and would answer
    the next send with ``409``.
    """

    def __init__(self, session: aiohttp.ClientSession, config: SoakConfig, lanes: int) -> None:
        assert config.url is not None
        self._session = session
        self._config = config
        base = config.url.rstrip("/")
        self._create_url = f"{base}/api/conversations"
        self._base = base
        self._headers = _headers(config, stream=False)
        self._stream_headers = _headers(config, stream=True)
        self._lanes = [_Lane() for _ in range(lanes)]
        self._created = 0
        self.description = f"chatkeep {base}"

    def stats(self) -> dict[str, int]:
        """Conversations opened so far."""
        return {"conversations_created": self._created}

    async def send(self, lane: int, number: int) -> Outcome:
        """Send one message on the lane's conversation, opening one first if needed."""
        state = self._lanes[lane]
        limit = self._config.messages_per_conversation
        if state.conversation_id is None or (limit and state.sent >= limit):
            opened = await self._open(state, lane)
            if opened is not None:
                return opened
        started = time.perf_counter()
        try:
            outcome = await self._send_message(state, number, started)
        except Exception as exc:  # every failure becomes an error class, never an exception
            outcome = Outcome(time.perf_counter() - started, error_class(exc), detail=str(exc))
        state.sent += 1
        if outcome.error in _ROTATE_AFTER:
            state.conversation_id = None
        return outcome

    async def _open(self, state: _Lane, lane: int) -> Outcome | None:
        body: dict[str, object] = {"title": f"soak lane {lane}", "metadata": {"soak": True}}
        if self._config.model:
            body["model"] = self._config.model
        started = time.perf_counter()
        try:
            async with self._session.post(
                self._create_url, data=orjson.dumps(body), headers=self._headers
            ) as response:
                failed = await _http_error(response, started)
                if failed is not None:
                    return failed
                payload = orjson.loads(await response.read())
                conversation_id = payload.get("id") if isinstance(payload, dict) else None
                if not isinstance(conversation_id, str | int):
                    raise ProtocolViolation("conversation created without an id")
        except Exception as exc:  # every failure becomes an error class
            return Outcome(time.perf_counter() - started, error_class(exc), detail=str(exc))
        state.conversation_id = str(conversation_id)
        state.sent = 0
        self._created += 1
        return None

    async def _send_message(self, state: _Lane, number: int, started: float) -> Outcome:
        body: dict[str, object] = {"content": _message_text(self._config, number)}
        stream = self._config.stream
        if stream:
            body["stream"] = True
        if self._config.client_message_ids:
            body["client_message_id"] = uuid.uuid4().hex
        url = f"{self._base}/api/conversations/{state.conversation_id}/messages"
        headers = self._stream_headers if stream else self._headers
        async with self._session.post(url, data=orjson.dumps(body), headers=headers) as response:
            failed = await _http_error(response, started)
            if failed is not None:
                return failed
            if not stream:
                payload = orjson.loads(await response.read())
                if not isinstance(payload, dict) or "assistant_message" not in payload:
                    raise ProtocolViolation("reply without assistant_message")
                return Outcome(time.perf_counter() - started)
            ttft: float | None = None
            async for event, data in _SSEReader(response):
                if event == "delta":
                    if ttft is None:
                        ttft = time.perf_counter() - started
                elif event == "done":
                    return Outcome(time.perf_counter() - started, ttft=ttft)
                elif event == "error":
                    raise StreamFailed(data[:200].decode("utf-8", "replace"))
            raise StreamFailed("stream ended without a done event")


def openai_endpoint(url: str) -> str:
    """The chat completions URL for a base URL given as ``…``, ``…/v1`` or in full."""
    url = url.rstrip("/")
    if url.endswith("/chat/completions"):
        return url
    if url.endswith("/v1"):
        return f"{url}/chat/completions"
    return f"{url}/v1/chat/completions"


class OpenAITarget:
    """Stateless chat completions on any OpenAI-compatible endpoint, streamed or not."""

    def __init__(self, session: aiohttp.ClientSession, config: SoakConfig) -> None:
        assert config.openai_url is not None and config.model
        self._session = session
        self._config = config
        self._url = openai_endpoint(config.openai_url)
        self._headers = _headers(config, stream=config.stream)
        self.description = f"openai {self._url} model={config.model}"

    def stats(self) -> dict[str, int]:
        """No counters beyond the requests themselves."""
        return {}

    async def send(self, lane: int, number: int) -> Outcome:
        """Ask for one completion; the lane does not matter to a stateless endpoint."""
        body = {
            "model": self._config.model,
            "messages": [{"role": "user", "content": _message_text(self._config, number)}],
            "stream": self._config.stream,
        }
        started = time.perf_counter()
        try:
            return await self._complete(orjson.dumps(body), started)
        except Exception as exc:  # every failure becomes an error class, never an exception
            return Outcome(time.perf_counter() - started, error_class(exc), detail=str(exc))

    async def _complete(self, body: bytes, started: float) -> Outcome:
        async with self._session.post(self._url, data=body, headers=self._headers) as response:
            failed = await _http_error(response, started)
            if failed is not None:
                return failed
            if not self._config.stream:
                payload = orjson.loads(await response.read())
                if not isinstance(payload, dict) or not payload.get("choices"):
                    raise ProtocolViolation("completion without choices")
                return Outcome(time.perf_counter() - started)
            ttft: float | None = None
            async for _event, data in _SSEReader(response):
                if data == b"[DONE]":
                    return Outcome(time.perf_counter() - started, ttft=ttft)
                # JSON escapes every quote inside a string, so an unescaped "error" is a key
                # or a value of the chunk itself, never a piece of generated text.
                if b'"error"' in data:
                    chunk = orjson.loads(data)
                    if isinstance(chunk, dict) and chunk.get("error"):
                        raise StreamFailed(str(chunk["error"])[:200])
                if ttft is None and _has_content(data):
                    ttft = time.perf_counter() - started
            raise StreamFailed("stream ended without [DONE]")


def _has_content(data: bytes) -> bool:
    """Whether a completion chunk carries generated text (the first token's arrival)."""
    if b'"content"' not in data:
        return False
    chunk = orjson.loads(data)
    if not isinstance(chunk, dict):
        return False
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if isinstance(delta, dict) and delta.get("content"):
            return True
    return False


def make_target(session: aiohttp.ClientSession, config: SoakConfig, lanes: int) -> Target:
    """The target named by ``config``, with ``lanes`` lanes."""
    if config.url is not None:
        return ChatkeepTarget(session, config, lanes)
    return OpenAITarget(session, config)
