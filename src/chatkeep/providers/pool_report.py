"""What the provider pools show: ``/admin/providers`` JSON and Prometheus families.

Labels are the configured model and backend names only (a model has at most
`chatkeep.settings.MAX_BACKENDS` backends), so the number of series is fixed by the
configuration, never by traffic. No URL carries credentials, and no key is shown.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Literal

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from chatkeep.providers.backend import Backend
from chatkeep.providers.hedging import ADAPTIVE_PERCENTILE, hedge_delay
from chatkeep.providers.pool import ProviderPool
from chatkeep.settings import ModelConfig

STATES = ("healthy", "degraded", "cooldown")


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 3)


def backend_report(
    backend: Backend, now: float, hedge_after: float | Literal["adaptive"] | None = None
) -> dict[str, Any]:
    """One backend's state, bounds, health, breaker and hedges.

    ``hedge_after`` is the model's ``hedge_after_ms``: the report says how long a reply
    sent to this backend now waits for its first token before a hedge.
    """
    health, breaker = backend.health, backend.breaker
    reopens = breaker.reopens_in()
    learnt = health.ttft_percentile(ADAPTIVE_PERCENTILE) if hedge_after == "adaptive" else None
    return {
        "name": backend.name,
        "backend": backend.provider.label,
        "state": health.state(breaker),
        "inflight": health.inflight,
        "max_inflight": backend.max_inflight,
        "weight": backend.weight,
        "ewma_ttft_ms": _ms(health.ewma_ttft),
        "p95_ttft_ms": _ms(health.p95_ttft()),
        "error_rate": round(health.error_rate, 4),
        "samples": health.samples,
        "window": health.window,
        "requests": health.requests,
        "failures": health.failures,
        "breaker": {
            "state": breaker.state.value,
            "consecutive_failures": breaker.consecutive_failures,
            "times_opened": breaker.opened,
            # None while a probe must answer first; 0 when requests may go now.
            "reopens_in_seconds": None if reopens is None else round(reopens, 3),
            "waits_for_probe": reopens is None,
        },
        "last_error": health.last_error,
        "last_error_seconds_ago": (
            None if health.last_error_at is None else round(now - health.last_error_at, 3)
        ),
        "hedges": {
            "won": health.hedges_won,
            "lost": health.hedges_lost,
            # None: no hedging, or an adaptive pool still learning this backend.
            "after_ms": _ms(hedge_delay(hedge_after, learnt)),
        },
    }


def model_report(name: str, config: ModelConfig, pool: ProviderPool | None) -> dict[str, Any]:
    """One model: a plain provider's kind, or a pool's settings and backends."""
    if pool is None:
        return {"model": name, "provider": config.provider, "pooled": False, "backends": []}
    now = pool.clock()
    budget = pool.budget
    return {
        "model": name,
        "provider": config.provider,
        "pooled": True,
        "balancing": config.balancing,
        "attempts": config.attempts,
        "attempt_timeout_seconds": config.attempt_timeout_seconds,
        "deadline_seconds": config.timeout_seconds,
        "retries": pool.retries,
        "hedging": {
            "after_ms": config.hedge_after_ms,
            "budget": config.hedge_budget,
            "tokens": round(budget.tokens, 3),
            "sent": budget.spent,
            "refused": budget.refused,
        },
        "probing": {
            "running": pool.prober.running,
            "interval_seconds": pool.prober.interval,
            "probes": pool.prober.probes,
        },
        "backends": [
            backend_report(backend, now, config.hedge_after_ms) for backend in pool.backends
        ],
    }


def metric_families(pools: Mapping[str, ProviderPool]) -> Iterator[Metric]:
    """Gauges and counters per model and backend, read when scraped."""
    labels = ["model", "backend"]
    state = GaugeMetricFamily(
        "chatkeep_provider_backend_state",
        "1 for the backend's current state (healthy, degraded, cooldown).",
        labels=[*labels, "state"],
    )
    inflight = GaugeMetricFamily(
        "chatkeep_provider_backend_inflight", "Requests running on the backend.", labels=labels
    )
    error_rate = GaugeMetricFamily(
        "chatkeep_provider_backend_error_rate",
        "Failed share of the backend's recent attempts (its health window).",
        labels=labels,
    )
    ttft = GaugeMetricFamily(
        "chatkeep_provider_backend_ttft_ewma_seconds",
        "EWMA of the backend's time to first token.",
        labels=labels,
    )
    requests = CounterMetricFamily(
        "chatkeep_provider_backend_requests", "Attempts sent to the backend.", labels=labels
    )
    failures = CounterMetricFamily(
        "chatkeep_provider_backend_failures", "Attempts the backend failed.", labels=labels
    )
    openings = CounterMetricFamily(
        "chatkeep_provider_backend_breaker_openings",
        "Times the backend's circuit breaker opened.",
        labels=labels,
    )
    hedges = CounterMetricFamily(
        "chatkeep_provider_backend_hedges",
        "Hedged requests sent to the backend, by outcome (won, lost).",
        labels=[*labels, "outcome"],
    )
    retries = CounterMetricFamily(
        "chatkeep_provider_retries", "Attempts after a reply's first one.", labels=["model"]
    )
    for model, pool in pools.items():
        retries.add_metric([model], pool.retries)
        for backend in pool.backends:
            health, key = backend.health, [model, backend.name]
            current = health.state(backend.breaker)
            for name in STATES:
                state.add_metric([*key, name], 1.0 if name == current else 0.0)
            inflight.add_metric(key, health.inflight)
            error_rate.add_metric(key, health.error_rate)
            if health.ewma_ttft is not None:
                ttft.add_metric(key, health.ewma_ttft)
            requests.add_metric(key, health.requests)
            failures.add_metric(key, health.failures)
            openings.add_metric(key, backend.breaker.opened)
            hedges.add_metric([*key, "won"], health.hedges_won)
            hedges.add_metric([*key, "lost"], health.hedges_lost)
    yield from (state, inflight, error_rate, ttft, requests, failures, openings, hedges, retries)
