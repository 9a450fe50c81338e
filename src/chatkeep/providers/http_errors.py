"""Error translation: the one place where driver errors become `ProviderError`s.

`provider_errors` is where aiohttp, JSON and timeout errors become
`chatkeep.errors.ProviderError`s; nothing from the driver leaves a provider.

    TimeoutError (total, connect, read)         -> ProviderTimeout
    ClientPayloadError (body broke off)         -> StreamCut
    other aiohttp errors (refused, reset, ...)  -> ProviderUnavailable
    ValueError (bad JSON, oversized line)       -> ProviderUnavailable
    answer 429 or 5xx                           -> ProviderUnavailable  (`raise_for_status`)
    other answer >= 400                         -> ProviderError
    (both carry ``upstream_status``, and ``retry_after`` from a ``Retry-After`` header)
"""

from __future__ import annotations

import contextlib
import email.utils
import math
import time
from collections.abc import Iterator

import aiohttp

from chatkeep.errors import (
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    StreamCut,
)

#: How much of an error body goes into the error message.
EXCERPT_BYTES = 512
EXCERPT_CHARS = 200


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
