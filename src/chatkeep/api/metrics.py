"""Prometheus ``/metrics``: the registry, the live gauges and the endpoint.

Requests are counted by `chatkeep.api.middleware.metrics.MetricsMiddleware`.

Labels take only bounded values: the route *template* (``/api/conversations/{conversation_id}``,
never an id), the method, the status code, a tier name, a governor action or a quota's
reason. Anything per-user, per-key or per-conversation is left out on purpose, so the
number of series is fixed by the code, not by the traffic: the quotas are reported as
totals (refusals by reason, keys tracked, owners waiting), never by key.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from fastapi import APIRouter
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

from chatkeep.memory.governor import TIERS

if TYPE_CHECKING:
    from chatkeep.api.state import AppState
    from chatkeep.quotas.failures import FailedAttempts
    from chatkeep.quotas.rate import KeyRateLimiter
    from chatkeep.quotas.streams import OpenStreams

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
UNMATCHED = "unmatched"
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
#: The gateway's own time: tenths of a millisecond on a passthrough, a durable send's
#: commits (milliseconds) on a send.
_OVERHEAD_BUCKETS = (0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1, 5)
#: Why a caller was refused for its own limits (429): the label values of
#: ``chatkeep_quota_refusals``, every one always present.
QUOTA_REASONS = ("rate", "streams", "queue", "auth_failures")


class _Quotas:
    """The per-key limiters a server runs with (each optional: absent ones count zero)."""

    def __init__(self) -> None:
        self.rate: KeyRateLimiter | None = None
        self.streams: OpenStreams | None = None
        self.attempts: FailedAttempts | None = None


class Metrics:
    """The metrics of one server, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "chatkeep_http_requests",
            "HTTP requests by route template, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "chatkeep_http_request_duration_seconds",
            "Time from request to the last byte of the answer (whole streams included).",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.overhead = Histogram(
            "chatkeep_gateway_overhead_seconds",
            "Time of a request that called a model, less its wait on the backend "
            "(from the call to the backend's last byte).",
            ["route"],
            buckets=_OVERHEAD_BUCKETS,
            registry=self.registry,
        )
        self.commit_latency = Histogram(
            "chatkeep_storage_commit_duration_seconds",
            "Time of one durable storage commit (one group of writes).",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
            registry=self.registry,
        )
        self.commit_writes = Counter(
            "chatkeep_storage_committed_writes",
            "Writes made durable (several may share one commit).",
            registry=self.registry,
        )

        self.quotas = _Quotas()

    def attach_quotas(
        self,
        *,
        rate: KeyRateLimiter | None = None,
        streams: OpenStreams | None = None,
        attempts: FailedAttempts | None = None,
    ) -> None:
        """Report these limiters' refusals and sizes (read at scrape time, as totals)."""
        self.quotas.rate = rate
        self.quotas.streams = streams
        self.quotas.attempts = attempts

    def observe_commit(self, seconds: float, writes: int) -> None:
        """The storage commit hook."""
        self.commit_latency.observe(seconds)
        self.commit_writes.inc(writes)

    def attach(self, state: AppState) -> None:
        """Expose the live state (streams, admission, memory, caches) at scrape time."""
        self.registry.register(_StateCollector(state, self.quotas))


class _StateCollector(Collector):
    """Reads gauges from the running server when scraped, so nothing is kept twice."""

    def __init__(self, state: AppState, quotas: _Quotas) -> None:
        self._state = state
        self._quotas = quotas

    def collect(self) -> Iterator[Metric]:
        state = self._state
        yield _gauge(
            "chatkeep_generations_inflight", "Replies being generated.", state.admission.inflight
        )
        yield _gauge(
            "chatkeep_generations_queued", "Replies waiting for a slot.", state.admission.queued
        )
        yield _counter(
            "chatkeep_generations_rejected",
            "Generations refused with 503.",
            state.admission.rejected,
        )
        streams = state.hub.counts()
        yield _gauge("chatkeep_streams_running", "Reply streams being written.", streams["running"])
        yield _gauge(
            "chatkeep_streams_retained",
            "Finished reply streams kept for resuming.",
            streams["retained"],
        )
        yield _gauge(
            "chatkeep_stream_subscribers", "Clients reading reply streams.", streams["subscribers"]
        )
        yield _gauge(
            "chatkeep_stream_buffer_bytes", "Reply text held by streams.", streams["bytes"]
        )
        yield from self._memory()
        yield from self._caches()
        yield from self._quota_metrics()
        yield from state.providers.metric_families()
        yield from self._retention()

    def _retention(self) -> Iterator[Metric]:
        runner = self._state.retention
        if runner is None:
            return
        stats = runner.stats()
        yield _gauge(
            "chatkeep_retention_enabled", "1 when a retention policy is set.", stats["enabled"]
        )
        for name, field, text in (
            ("archived", "archived_total", "Conversations archived by the retention policy."),
            ("deleted", "deleted_total", "Conversations deleted by the retention policy."),
            ("runs", "runs", "Passes of the retention policy."),
            ("failed_runs", "failed_runs", "Passes of the retention policy that failed."),
        ):
            yield _counter(f"chatkeep_retention_{name}", text, stats[field])

    def _quota_metrics(self) -> Iterator[Metric]:
        quotas, admission = self._quotas, self._state.admission
        counts = {
            "rate": quotas.rate.refused if quotas.rate is not None else 0,
            "streams": quotas.streams.refused if quotas.streams is not None else 0,
            "queue": admission.refused_per_owner,
            "auth_failures": quotas.attempts.refused if quotas.attempts is not None else 0,
        }
        refusals = CounterMetricFamily(
            "chatkeep_quota_refusals",
            "Requests refused (429) for a caller's own limits, by reason.",
            labels=["reason"],
        )
        for reason in QUOTA_REASONS:
            refusals.add_metric([reason], counts[reason])
        yield refusals
        yield _gauge(
            "chatkeep_admission_owners_waiting",
            "Owners with at least one generation waiting for a slot.",
            admission.owners_waiting,
        )
        yield _gauge(
            "chatkeep_quota_rate_keys",
            "API keys whose request rate is tracked.",
            len(quotas.rate) if quotas.rate is not None else 0,
        )
        yield _counter(
            "chatkeep_quota_rate_keys_evicted",
            "API keys forgotten by the rate limiter to stay within its bound.",
            quotas.rate.evicted if quotas.rate is not None else 0,
        )
        yield _gauge(
            "chatkeep_quota_open_streams",
            "Replies and reply streams open, counted against their keys.",
            quotas.streams.total if quotas.streams is not None else 0,
        )
        yield _gauge(
            "chatkeep_quota_auth_failure_clients",
            "Client addresses whose failed authentication attempts are tracked.",
            len(quotas.attempts) if quotas.attempts is not None else 0,
        )

    def _memory(self) -> Iterator[Metric]:
        governor = self._state.memory.governor
        latest = governor.sampler.latest
        rss = latest.rss if latest is not None else 0
        yield _gauge("chatkeep_process_resident_memory_bytes", "RSS at the last sample.", rss)
        yield _gauge("chatkeep_memory_budget_bytes", "The memory budget.", governor.budget.bytes)
        yield _gauge(
            "chatkeep_memory_budget_fraction",
            "RSS as a fraction of the budget.",
            governor.fraction or 0.0,
        )
        tier = GaugeMetricFamily("chatkeep_memory_tier", "1 for the current tier.", labels=["tier"])
        for tier_name in TIERS:
            tier.add_metric([tier_name], 1.0 if governor.tier == tier_name else 0.0)
        yield tier
        trend = governor.trend()
        yield _gauge(
            "chatkeep_memory_trend_bytes_per_request",
            "Robust slope of RSS against requests served.",
            trend.slope_per_request,
        )
        verdict = GaugeMetricFamily(
            "chatkeep_memory_trend_verdict", "1 for the current verdict.", labels=["verdict"]
        )
        for verdict_name in ("stable", "growing", "shrinking", "unknown"):
            verdict.add_metric([verdict_name], 1.0 if trend.verdict == verdict_name else 0.0)
        yield verdict
        actions = CounterMetricFamily(
            "chatkeep_memory_governor_actions",
            "Actions the memory governor took.",
            labels=["action"],
        )
        for action, count in governor.actions.items():
            actions.add_metric([action], count)
        yield actions

    def _caches(self) -> Iterator[Metric]:
        sizes = GaugeMetricFamily(
            "chatkeep_cache_bytes", "Bytes held by a bounded cache.", labels=["cache"]
        )
        limits = GaugeMetricFamily(
            "chatkeep_cache_max_bytes", "Byte bound of a cache.", labels=["cache"]
        )
        hits = CounterMetricFamily("chatkeep_cache_hits", "Cache hits.", labels=["cache"])
        misses = CounterMetricFamily("chatkeep_cache_misses", "Cache misses.", labels=["cache"])
        evictions = CounterMetricFamily(
            "chatkeep_cache_evictions", "Cache evictions.", labels=["cache"]
        )
        for name, stats in self._state.cache_stats().items():
            sizes.add_metric([name], stats.get("currsize", 0))
            limits.add_metric([name], stats.get("maxsize", 0))
            hits.add_metric([name], stats.get("hits", 0))
            misses.add_metric([name], stats.get("misses", 0))
            evictions.add_metric([name], stats.get("evictions", 0))
        yield from (sizes, limits, hits, misses, evictions)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)


router = APIRouter(tags=["health"])


@router.get(
    "/metrics",
    response_model=None,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    summary="Prometheus metrics, in its text format",
)
async def metrics_endpoint(request: Request) -> Response:
    """``GET /metrics`` in the Prometheus text format."""
    metrics: Metrics = request.app.state.metrics
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE)
