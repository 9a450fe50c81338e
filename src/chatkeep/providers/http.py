"""The base of the HTTP providers: a model's URL, label, headers, timeouts and session.

Its pieces live beside it, one idea each, and are importable from here too:
`chatkeep.providers.http_session` (one pooled session per backend),
`chatkeep.providers.http_timeouts` (the whole-reply timeout and what a retry has left),
`chatkeep.providers.http_errors` (driver errors and error statuses as `ProviderError`s),
`chatkeep.providers.http_body` (reading an answer: lines, relayed chunks, the drain).
"""

from __future__ import annotations

import logging
import time

import aiohttp

from chatkeep.providers.base import Provider
from chatkeep.providers.http_body import (
    DRAIN_LIMIT_BYTES,
    MAX_LINE_BYTES,
    Lines,
    RelayedBody,
    drain,
)
from chatkeep.providers.http_errors import (
    EXCERPT_BYTES,
    EXCERPT_CHARS,
    excerpt,
    parse_retry_after,
    provider_errors,
    raise_for_status,
    status_error,
    stream_cut,
)
from chatkeep.providers.http_session import (
    Attempt,
    BackendSession,
    ReuseAwareConnector,
    backend_label,
    backend_origin,
    create_session,
    current_attempt,
)
from chatkeep.providers.http_timeouts import (
    attempt_limit,
    client_timeout,
    limited,
    remaining_timeout,
)
from chatkeep.settings import ModelConfig

__all__ = [
    "DRAIN_LIMIT_BYTES",
    "EXCERPT_BYTES",
    "EXCERPT_CHARS",
    "MAX_LINE_BYTES",
    "Attempt",
    "BackendSession",
    "HTTPProvider",
    "Lines",
    "RelayedBody",
    "ReuseAwareConnector",
    "attempt_limit",
    "auth_headers",
    "backend_label",
    "backend_origin",
    "client_timeout",
    "create_session",
    "current_attempt",
    "drain",
    "excerpt",
    "limited",
    "parse_retry_after",
    "provider_errors",
    "raise_for_status",
    "remaining_timeout",
    "status_error",
    "stream_cut",
]

logger = logging.getLogger("chatkeep.providers")


def auth_headers(config: ModelConfig) -> dict[str, str]:
    """The JSON request headers of a model, with its bearer key when it has one."""
    headers = {"Content-Type": "application/json"}
    if config.api_key:
        headers["Authorization"] = f"Bearer {config.api_key}"
    return headers


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
            attempt = Attempt()
            token = current_attempt.set(attempt)
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
                current_attempt.reset(token)

    async def aclose(self) -> None:
        if self._owns_session:
            await self.session.aclose()
