"""The timeouts of a request to a backend: the whole reply's, and what is left for a retry.

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

import contextvars
import time

import aiohttp

from chatkeep.settings import ModelConfig


def client_timeout(config: ModelConfig) -> aiohttp.ClientTimeout:
    """The whole-reply and connect timeouts of one model.

    ``sock_connect`` rather than ``connect``: the latter also counts the wait for a free
    pooled connection, and a full pool is back-pressure, not an unreachable backend.
    """
    return aiohttp.ClientTimeout(
        total=config.timeout_seconds, sock_connect=config.connect_timeout_seconds
    )


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


def remaining_timeout(timeout: aiohttp.ClientTimeout, started: float) -> aiohttp.ClientTimeout:
    """The timeout of a retry: what is left of ``timeout``'s total since ``started``."""
    if timeout.total is None:
        return timeout
    left = timeout.total - (time.monotonic() - started)
    if left <= 0:
        raise TimeoutError
    return aiohttp.ClientTimeout(total=left, sock_connect=timeout.sock_connect)
