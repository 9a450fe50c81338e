"""What the HTTP providers share: one pooled session per backend, and error translation.

`provider_errors` is the one place where aiohttp, JSON and timeout errors become
`chatkeep.errors.ProviderError`s; nothing from the driver leaves a provider.

    TimeoutError (total, connect, read)         -> ProviderTimeout
    ClientPayloadError (body broke off)         -> StreamCut
    other aiohttp errors (refused, reset, ...)  -> ProviderUnavailable
    ValueError (bad JSON, oversized line)       -> ProviderUnavailable
    answer 429 or 5xx                           -> ProviderUnavailable  (`raise_for_status`)
    other answer >= 400                         -> ProviderError
    (both carry ``upstream_status``, and ``retry_after`` from a ``Retry-After`` header)

The whole-reply timeout has one owner: the provider. aiohttp's ``total`` timeout bounds
a reply from the first attempt to the last byte (a retry gets what is left of it), on
every path that reaches a backend: durable sends, the ``/v1`` passthrough, summaries.
Only the provider sees every path, including a relayed answer that is read long after
its caller returned, and only it knows when it retries. Callers add no second
whole-reply timer (it would race this one and fail a reply with another error); the
generation pipeline bounds only the silence between two pieces, a different promise.
A provider pool shortens it for a retry with `attempt_limit`: what is left of the
reply's total deadline, so an attempt started late never outlives the reply.
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import email.utils
import enum
import logging
import math
import time
import weakref
from collections.abc import Iterator

import aiohttp
from aiohttp.client_proto import ResponseHandler
from aiohttp.connector import Connection
from aiohttp.tracing import Trace
from yarl import URL

from chatkeep.errors import (
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    StreamCut,
)
from chatkeep.providers.base import Provider
from chatkeep.settings import ModelConfig

#: How much of an error body goes into the error message.
EXCERPT_BYTES = 512
EXCERPT_CHARS = 200
#: What is read past a stream's terminal marker so its connection can be reused.
DRAIN_LIMIT_BYTES = 64 * 1024
#: The longest line a streamed answer may hold (one NDJSON object or SSE field).
MAX_LINE_BYTES = 1024 * 1024

logger = logging.getLogger("chatkeep.providers")


def backend_origin(url: str) -> str:
    """``scheme://host:port`` of a backend URL: the key that models share a session by."""
    parsed = URL(url)
    if not parsed.absolute or parsed.scheme not in ("http", "https") or not parsed.host:
        # Named without its user and password: this message reaches the terminal.
        shown = parsed.with_user(None) if parsed.absolute else parsed
        raise ValueError(f"not an http(s) URL: {str(shown)!r}")
    return str(parsed.origin())


def backend_label(kind: str, url: str) -> str:
    """How errors name a backend, e.g. ``ollama at http://127.0.0.1:11434`` (no credentials)."""
    parsed = URL(url)
    return f"{kind} at {parsed.with_user(None).with_query(None)}".rstrip("/")


def client_timeout(config: ModelConfig) -> aiohttp.ClientTimeout:
    """The whole-reply and connect timeouts of one model.

    ``sock_connect`` rather than ``connect``: the latter also counts the wait for a free
    pooled connection, and a full pool is back-pressure, not an unreachable backend.
    """
    return aiohttp.ClientTimeout(
        total=config.timeout_seconds, sock_connect=config.connect_timeout_seconds
    )


class _Attempt:
    """One attempt at a request: did its connection come from the pool?"""

    __slots__ = ("reused",)

    def __init__(self) -> None:
        self.reused = False


#: The attempt being sent in this task, which `ReuseAwareConnector` tells about its connection.
_current_attempt: contextvars.ContextVar[_Attempt | None] = contextvars.ContextVar(
    "chatkeep_http_attempt", default=None
)


class ReuseAwareConnector(aiohttp.TCPConnector):
    """A connection pool that tells the `_current_attempt` whether its connection is reused.

    aiohttp's tracing reports reuse too, but turned on it costs every request about
    15 µs (measured: 183 → 198 µs per in-process passthrough round trip) in event
    objects and awaits, for the one fact needed here; this costs a set lookup.
    """

    def __init__(self, *, limit: int, keepalive_seconds: float) -> None:
        super().__init__(limit=limit, limit_per_host=0, keepalive_timeout=keepalive_seconds)
        self._used: weakref.WeakSet[ResponseHandler] = weakref.WeakSet()

    async def connect(
        self,
        req: aiohttp.ClientRequest,
        traces: list[Trace],
        timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109 - aiohttp's signature
    ) -> Connection:
        connection = await super().connect(req, traces, timeout)
        protocol = connection.protocol
        if protocol is not None:
            attempt = _current_attempt.get()
            if attempt is not None:
                attempt.reused = protocol in self._used
            self._used.add(protocol)
        return connection


def create_session(config: ModelConfig) -> aiohttp.ClientSession:
    """A session with a bounded keep-alive pool and ``config``'s timeouts.

    Must be called inside the running event loop that will use it.
    """
    connector = ReuseAwareConnector(
        limit=config.max_connections, keepalive_seconds=config.keepalive_seconds
    )
    # trust_env=False: proxies come from configuration, not from whoever starts the server.
    # No cookie jar: one backend session serves every user, so nothing may be remembered
    # between requests (and skipping the jar saves work on every request).
    return aiohttp.ClientSession(
        connector=connector,
        timeout=client_timeout(config),
        trust_env=False,
        cookie_jar=aiohttp.DummyCookieJar(),
    )


class _State(enum.Enum):
    UNOPENED = "unopened"
    OPEN = "open"
    CLOSED = "closed"


class BackendSession:
    """The one `aiohttp.ClientSession` of one backend, shared by every model that uses it.

    The session is created on the first `get`, which must happen inside the running
    event loop; `aclose` closes it and is safe to call twice. Using it after `aclose`
    raises `RuntimeError`.
    """

    def __init__(self, origin: str, config: ModelConfig) -> None:
        self.origin = origin
        # Keys travel with each request (models of one backend may differ); a session's
        # config is for its bounds only and may end up in a log.
        self.config = config.model_copy(update={"api_key": None})
        self._session: aiohttp.ClientSession | None = None
        self._state = _State.UNOPENED

    @classmethod
    def shared_by(cls, configs: list[ModelConfig]) -> BackendSession:
        """One session for several models of one backend: the widest bounds among them."""
        first = configs[0]
        if first.url is None:
            raise ValueError(f"a {first.provider} model needs a url")
        config = first.model_copy(
            update={
                "max_connections": max(c.max_connections for c in configs),
                "timeout_seconds": max(c.timeout_seconds for c in configs),
                "connect_timeout_seconds": max(c.connect_timeout_seconds for c in configs),
                # The shortest: the one model that knows its backend closes sooner wins.
                "keepalive_seconds": min(c.keepalive_seconds for c in configs),
            }
        )
        return cls(backend_origin(first.url), config)

    @property
    def is_open(self) -> bool:
        return self._state is _State.OPEN

    def get(self) -> aiohttp.ClientSession:
        """The session, created now if this is the first use."""
        if self._state is _State.CLOSED:
            raise RuntimeError(f"the session for {self.origin} is closed")
        if self._session is None:
            self._session = create_session(self.config)
            self._state = _State.OPEN
        return self._session

    async def aclose(self) -> None:
        """Close the pooled connections. Safe twice."""
        session, self._session = self._session, None
        self._state = _State.CLOSED
        if session is not None:
            await session.close()


#: The longest a request sent in this context may take in all (seconds; None: the
#: model's timeout). A provider pool sets it around the first step of a retry's stream
#: (`ContextVar.set`/`reset` directly: a context manager costs 4 µs a reply): it is read
#: when the request is sent, and then bounds the whole answer.
attempt_limit: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "chatkeep_attempt_limit", default=None
)


def limited(timeout: aiohttp.ClientTimeout, seconds: float | None) -> aiohttp.ClientTimeout:
    """``timeout`` with its total cut to ``seconds`` when that is shorter."""
    if seconds is None or (timeout.total is not None and timeout.total <= seconds):
        return timeout
    if seconds <= 0:
        raise TimeoutError
    return aiohttp.ClientTimeout(total=seconds, sock_connect=timeout.sock_connect)


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds asked for by a ``Retry-After`` header: a number, or an HTTP date.

    None when absent or unreadable; never negative, never infinite or NaN. ``now`` is
    the wall-clock time an HTTP date is counted from (the current time by default).
    """
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def remaining_timeout(timeout: aiohttp.ClientTimeout, started: float) -> aiohttp.ClientTimeout:
    """The timeout of a retry: what is left of ``timeout``'s total since ``started``."""
    if timeout.total is None:
        return timeout
    left = timeout.total - (time.monotonic() - started)
    if left <= 0:
        raise TimeoutError
    return aiohttp.ClientTimeout(total=left, sock_connect=timeout.sock_connect)


def auth_headers(config: ModelConfig) -> dict[str, str]:
    """The JSON request headers of a model, with its bearer key when it has one."""
    headers = {"Content-Type": "application/json"}
    if config.api_key:
        headers["Authorization"] = f"Bearer {config.api_key}"
    return headers


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """``text`` on one line, cut to ``limit`` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


@contextlib.contextmanager
def provider_errors(backend: str) -> Iterator[None]:
    """Translate driver errors raised in the block into `ProviderError`s that name ``backend``."""
    try:
        yield
    except ProviderError:
        raise
    # TimeoutError first: aiohttp's timeout errors are also connection errors.
    except TimeoutError as exc:
        what = "no connection" if isinstance(exc, aiohttp.ConnectionTimeoutError) else "no answer"
        raise ProviderTimeout(f"{backend}: {what} within the timeout") from exc
    except aiohttp.ClientPayloadError as exc:
        raise StreamCut(f"{backend}: the answer broke off ({excerpt(str(exc))})") from exc
    except aiohttp.ClientConnectorError as exc:
        reason = exc.os_error.strerror or str(exc.os_error)
        raise ProviderUnavailable(f"{backend}: cannot connect ({excerpt(reason)})") from exc
    except aiohttp.ClientError as exc:
        detail = excerpt(str(exc)) or type(exc).__name__
        raise ProviderUnavailable(f"{backend}: {detail}") from exc
    except ValueError as exc:
        raise ProviderUnavailable(f"{backend}: malformed answer ({excerpt(str(exc))})") from exc


async def raise_for_status(response: aiohttp.ClientResponse, backend: str) -> None:
    """Raise for an error status, quoting the start of the body; 429 and 5xx are retryable."""
    if response.status < 400:
        return
    body = await response.content.read(EXCERPT_BYTES)
    raise status_error(response.status, body, response.headers.get("Retry-After"), backend)


def status_error(status: int, body: bytes, retry_after: str | None, backend: str) -> ProviderError:
    """The error for an answer with an error ``status``; 429 and 5xx are retryable."""
    text = excerpt(body.decode("utf-8", errors="replace")) or "(empty body)"
    message = f"{backend} answered {status}: {text}"
    error_class = ProviderUnavailable if status == 429 or status >= 500 else ProviderError
    return error_class(message, upstream_status=status, retry_after=parse_retry_after(retry_after))


def stream_cut(backend: str, marker: str, pieces: int) -> StreamCut:
    """The error for a stream that ended cleanly but without its terminal marker."""
    return StreamCut(f"{backend}: the stream ended after {pieces} pieces without {marker}")


async def drain(response: aiohttp.ClientResponse) -> None:
    """Read what follows a terminal marker, so the connection goes back to the pool.

    Anything past `DRAIN_LIMIT_BYTES` is not worth reading: the connection is then
    closed when the response is released.
    """
    left = DRAIN_LIMIT_BYTES
    while left > 0 and (data := await response.content.readany()):
        left -= len(data)


class Lines:
    """The lines of a streamed body as they arrive, without their ``\\n``.

    Splits whatever each read brings rather than awaiting ``readline`` once per line;
    measured, that halves what a provider adds to a bare request. A line still open
    past ``limit`` bytes raises `ValueError` (a malformed answer), so a backend cannot
    grow it forever.
    """

    def __init__(self, response: aiohttp.ClientResponse, limit: int = MAX_LINE_BYTES) -> None:
        self._content = response.content
        self._limit = limit
        self._ready: collections.deque[bytes] = collections.deque()
        self._open = b""
        self._ended = False

    def __aiter__(self) -> Lines:
        return self

    async def __anext__(self) -> bytes:
        while not self._ready:
            if self._ended:
                raise StopAsyncIteration
            data = await self._content.readany()
            if not data:
                self._ended = True
                if self._open:
                    self._ready.append(self._open)
                continue
            *complete, self._open = (self._open + data).split(b"\n")
            if len(self._open) > self._limit:
                raise ValueError(f"a line longer than {self._limit} bytes")
            self._ready.extend(complete)
        return self._ready.popleft()


class RelayedBody:
    """An upstream body relayed chunk by chunk as it arrives, never buffered whole.

    The response is released when the body ends, when reading it fails, and on
    `aclose`; a caller that stops early must call `aclose` (safe twice).
    """

    def __init__(self, response: aiohttp.ClientResponse, backend: str) -> None:
        self._response = response
        self._backend = backend
        self._released = False

    def __aiter__(self) -> RelayedBody:
        return self

    async def __anext__(self) -> bytes:
        if self._released:
            raise StopAsyncIteration
        try:
            with provider_errors(self._backend):
                data = await self._response.content.readany()
        except BaseException:
            # Cancellation included: a relay cut short must not pin a connection.
            self._release()
            raise
        if not data:
            self._release()
            raise StopAsyncIteration
        return data

    async def aclose(self) -> None:
        self._release()

    def _release(self) -> None:
        if not self._released:
            self._released = True
            self._response.release()


class HTTPProvider(Provider):
    """What every HTTP provider shares: its URL, label, headers, timeouts and session.

    A provider serves one model: ``model`` is chatkeep's name for it, and the backend is
    sent ``upstream_model`` (the config's, else the same name) whatever the caller holds.
    With ``session`` given (by the registry) the session is shared and closed by its
    owner; without, the provider opens its own and `aclose` closes it.
    """

    #: ``ollama`` or ``openai``: names the backend in errors.
    kind: str = "http"

    def __init__(
        self, model: str, config: ModelConfig, session: BackendSession | None = None
    ) -> None:
        if not config.url:
            raise ValueError(f"an {self.kind} model needs a url")
        self.model = model
        self.upstream_model = config.upstream_model or model
        self.url = config.url
        self._chat_url = self.chat_url(config.url)
        self._probe_url = self.probe_url(config.url)
        self._label = backend_label(self.kind, config.url)
        self._headers = auth_headers(config)
        self._timeout = client_timeout(config)
        self._owns_session = session is None
        self.session = session or BackendSession(backend_origin(config.url), config)

    @staticmethod
    def chat_url(base_url: str) -> str:
        """The chat endpoint under ``base_url``."""
        raise NotImplementedError

    @staticmethod
    def probe_url(base_url: str) -> str:
        """A cheap endpoint under ``base_url`` that answers when the backend is up."""
        raise NotImplementedError

    @property
    def label(self) -> str:
        """How errors name this backend (``openai at http://…``, no credentials)."""
        return self._label

    async def probe(self, timeout: float) -> None:  # noqa: ASYNC109 - a bound on one GET
        """GET `probe_url` within ``timeout`` seconds; raise `ProviderError` unless it answers.

        Any answer but 429 and 5xx counts: a server without the listing (404) is up.
        """
        session = self.session.get()
        bound = aiohttp.ClientTimeout(total=timeout)
        with provider_errors(self._label):
            async with session.get(self._probe_url, headers=self._headers, timeout=bound) as got:
                if got.status == 429 or got.status >= 500:
                    await raise_for_status(got, self._label)

    async def send(self, body: bytes) -> aiohttp.ClientResponse:
        """POST ``body`` to the chat endpoint; returns once the answer's head has arrived.

        The model's ``timeout_seconds`` bounds the whole answer, retries included.

        An attempt that fails before any byte of the answer, on a connection taken from
        the pool, is tried again: the backend closed that idle connection as it was
        reused (its keep-alive ran out first), so nothing was answered. Each such
        connection is closed as it fails, so attempts end at the first fresh one (at
        most ``max_connections + 1`` in all, within the timeout), whose failure is
        raised. Nothing of an answer has reached anyone when a request is retried, and
        nothing is retried once the answer's head has arrived.
        Errors are aiohttp's; callers translate them with `provider_errors`.
        """
        session = self.session.get()
        timeout = limited(self._timeout, attempt_limit.get())
        started = time.monotonic()
        while True:
            attempt = _Attempt()
            token = _current_attempt.set(attempt)
            try:
                return await session.post(
                    self._chat_url, data=body, headers=self._headers, timeout=timeout
                )
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
                if not attempt.reused or isinstance(exc, aiohttp.ClientConnectorError):
                    raise
                logger.debug("%s: a pooled connection was closed; retrying", self._label)
                timeout = remaining_timeout(timeout, started)
            finally:
                _current_attempt.reset(token)

    async def aclose(self) -> None:
        if self._owns_session:
            await self.session.aclose()
