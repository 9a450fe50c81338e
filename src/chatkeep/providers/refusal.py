"""The answer for a pool's reply refused by rate limits or overload.

A reply that every attempt's backend refused with ``429`` or ``503`` (or that finds
every backend out for a ``Retry-After``) fails with `RateLimited` (``429``) or
`Overloaded` (``503``) carrying the smallest ``Retry-After`` given, so its client
knows when to come back, rather than with a ``502``.
"""

from __future__ import annotations

from chatkeep.errors import Overloaded, ProviderError, RateLimited
from chatkeep.providers.attempts import Reply
from chatkeep.providers.slots import NoBackendAvailable
from chatkeep.settings import ModelConfig


def refused(
    model: str, config: ModelConfig, reply: Reply, error: ProviderError
) -> Overloaded | None:
    """The answer for a reply refused by rate limits or overload, None for other failures.

    A ``429`` or ``503`` from every attempt says "later", not "broken": the client
    gets ``429`` (all were ``429``) or ``503``, with the smallest ``Retry-After`` a
    backend gave (or the breaker cooldown when none gave one). So does a reply
    finding every backend out for a ``Retry-After`` it was given before.
    """
    failures = reply.failures
    waits = [f.retry_after for f in failures if f.retry_after is not None]
    if isinstance(error, NoBackendAvailable):
        if error.busy or error.retry_after is None:
            return None
        waits.append(error.retry_after)
    elif not failures:
        return None
    statuses = {f.upstream_status for f in failures}
    if not statuses <= {429, 503}:
        return None
    retry_after = min(min(waits), config.max_retry_after_seconds) if waits else None
    if retry_after is None:
        retry_after = config.breaker_cooldown_seconds
    message = f"model {model!r}: every backend tried is busy ({error.message})"
    if statuses == {429}:
        return RateLimited(message, retry_after=retry_after)
    return Overloaded(message, retry_after=retry_after)
