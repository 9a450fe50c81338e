"""One backend of a provider pool, and how a model's configuration becomes its backends."""

from __future__ import annotations

from collections.abc import Callable

from chatkeep.providers.health import BackendHealth, Breaker
from chatkeep.providers.http import HTTPProvider
from chatkeep.settings import BackendConfig, ModelConfig


class Backend:
    """One backend of a pool: its provider, bounds, passive health and breaker."""

    __slots__ = (
        "attempt_timeout",
        "breaker",
        "health",
        "max_inflight",
        "name",
        "provider",
        "weight",
    )

    def __init__(
        self,
        name: str,
        provider: HTTPProvider,
        *,
        weight: float,
        max_inflight: int,
        attempt_timeout: float | None,
        health: BackendHealth,
        breaker: Breaker,
    ) -> None:
        self.name = name
        self.provider = provider
        self.weight = weight
        self.max_inflight = max_inflight
        self.attempt_timeout = attempt_timeout
        self.health = health
        self.breaker = breaker

    @property
    def inflight(self) -> int:
        return self.health.inflight

    @property
    def ewma_ttft(self) -> float | None:
        return self.health.ewma_ttft

    def usable(self) -> bool:
        """May a request go here now (breaker and in-flight bound)?"""
        return self.health.inflight < self.max_inflight and self.breaker.allows()

    async def probe(self, timeout: float) -> None:  # noqa: ASYNC109 - a bound on one GET
        await self.provider.probe(timeout)


def build_backend(
    name: str,
    provider: HTTPProvider,
    model: ModelConfig,
    backend: BackendConfig,
    clock: Callable[[], float],
) -> Backend:
    """The pool member for ``backend`` of ``model``, speaking through ``provider``."""
    max_connections = backend.max_connections or model.max_connections
    return Backend(
        name,
        provider,
        weight=backend.weight,
        max_inflight=backend.max_inflight or max_connections,
        attempt_timeout=backend.attempt_timeout_seconds or model.attempt_timeout_seconds,
        health=BackendHealth(
            window=model.health_window, degraded_error_rate=model.degraded_error_rate
        ),
        breaker=Breaker(
            failures=model.breaker_failures,
            cooldown=model.breaker_cooldown_seconds,
            max_retry_after=model.max_retry_after_seconds,
            clock=clock,
        ),
    )
