"""One pooled session per backend, and the pool that tells whether a connection is reused.

Models that share a backend origin (``scheme://host:port``) share its session. The
connector marks each attempt whose connection came from the pool, so a provider can
retry a request that a backend's closed idle connection lost before any answer.
"""

from __future__ import annotations

import contextvars
import enum
import weakref

import aiohttp
from aiohttp.client_proto import ResponseHandler
from aiohttp.connector import Connection
from aiohttp.tracing import Trace
from yarl import URL

from chatkeep.providers.http_timeouts import client_timeout
from chatkeep.settings import ModelConfig


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


class Attempt:
    """One attempt at a request: did its connection come from the pool?"""

    __slots__ = ("reused",)

    def __init__(self) -> None:
        self.reused = False


#: The attempt being sent in this task, which `ReuseAwareConnector` tells about its connection.
current_attempt: contextvars.ContextVar[Attempt | None] = contextvars.ContextVar(
    "chatkeep_http_attempt", default=None
)


class ReuseAwareConnector(aiohttp.TCPConnector):
    """A connection pool that tells the `current_attempt` whether its connection is reused.

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
            attempt = current_attempt.get()
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
