"""Prometheus metrics: what is exposed, and that labels stay bounded."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

import chatkeep.api.middleware.metrics
from chatkeep.memory.governor import MemoryGovernor
from chatkeep.memory.profiler import MemoryProfiler
from chatkeep.memory.sampler import MemoryReading, MemorySampler
from chatkeep.memory.watch import MemoryWatch
from chatkeep.providers.base import PassthroughResponse
from chatkeep.service.pipeline import BackendWait
from tests.api.conftest import ClientFactory, GatedProvider


def _series(text: str, name: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(name + "{")]


async def test_metrics_expose_the_promised_families(client: httpx.AsyncClient) -> None:
    conversation = (await client.post("/api/conversations", json={})).json()
    await client.post(f"/api/conversations/{conversation['id']}/messages", json={"content": "x"})
    text = (await client.get("/metrics")).text
    for name in (
        "chatkeep_http_requests_total",
        "chatkeep_http_request_duration_seconds_bucket",
        "chatkeep_generations_inflight",
        "chatkeep_generations_queued",
        "chatkeep_streams_running",
        "chatkeep_stream_subscribers",
        "chatkeep_process_resident_memory_bytes",
        "chatkeep_memory_budget_bytes",
        "chatkeep_memory_tier",
        "chatkeep_memory_trend_bytes_per_request",
        "chatkeep_memory_governor_actions_total",
        "chatkeep_storage_commit_duration_seconds_bucket",
    ):
        assert name in text, name
    assert 'route="/api/conversations/{conversation_id}/messages"' in text


async def test_request_labels_do_not_grow_with_ids(client: httpx.AsyncClient) -> None:
    for n in range(30):
        await client.get(f"/api/conversations/conv_{n}")
        await client.get(f"/no/such/path/{n}")
        await client.request(f"X{n}", "/healthz")
    text = (await client.get("/metrics")).text
    series = _series(text, "chatkeep_http_requests_total")
    assert len(series) <= 6, series
    assert not any(re.search(r"conv_\d|/no/such", line) for line in series)
    assert any('route="unmatched"' in line for line in series)
    assert any('method="OTHER"' in line for line in series)


class _FixedReading:
    def __init__(self, rss: int) -> None:
        self.rss = rss

    def __call__(self, want_uss: bool) -> MemoryReading:
        return MemoryReading(self.rss)


async def test_memory_pressure_sheds_generations_and_readiness(
    make_client: ClientFactory,
) -> None:
    reading = _FixedReading(rss=50)
    sampler = MemorySampler(read=reading, every_requests=1)
    governor = MemoryGovernor(100, sampler, malloc_trim=None)
    watch = MemoryWatch(sampler, governor, MemoryProfiler())
    client = await make_client(memory=watch)
    conversation = (await client.post("/api/conversations", json={})).json()
    url = f"/api/conversations/{conversation['id']}/messages"
    assert (await client.post(url, json={"content": "fine"})).status_code == 200

    reading.rss = 90  # 90% of the budget: the shed tier
    governor.evaluate(sampler.sample())
    refused = await client.post(url, json={"content": "too much"})
    assert refused.status_code == 503 and "retry-after" in refused.headers
    assert (await client.get("/readyz")).status_code == 503
    assert (await client.get("/healthz")).status_code == 200
    reading.rss = 97  # critical: no new streams either
    governor.evaluate(sampler.sample())
    stream = await client.get(f"/api/conversations/{conversation['id']}/stream")
    assert stream.status_code == 503

    reading.rss = 40
    governor.evaluate(sampler.sample())
    assert (await client.post(url, json={"content": "better"})).status_code == 200
    assert (await client.get("/readyz")).status_code == 200


async def test_refused_before_routing_counts_under_the_route(make_client: ClientFactory) -> None:
    # The body limit answers before any route ran, for hot and FastAPI routes alike.
    client = await make_client(max_body_bytes=1024)
    big = {"content": "x" * 2048}
    assert (await client.post("/api/conversations/c1/messages", json=big)).status_code == 413
    assert (
        await client.patch("/api/conversations/c1", json={"title": "x" * 2048})
    ).status_code == 413
    series = _series((await client.get("/metrics")).text, "chatkeep_http_requests_total")
    for route, method in (
        ("/api/conversations/{conversation_id}/messages", "POST"),
        ("/api/conversations/{conversation_id}", "PATCH"),
    ):
        assert any(f'method="{method}",route="{route}",status="413"' in s for s in series), series


async def test_plain_routes_count_under_their_template(client: httpx.AsyncClient) -> None:
    # Routes added with add_route (health, metrics, docs) put no route in the scope.
    await client.get("/healthz")
    await client.get("/openapi.json")
    series = _series((await client.get("/metrics")).text, "chatkeep_http_requests_total")
    for route in ("/healthz", "/openapi.json"):
        assert any(f'route="{route}",status="200"' in s for s in series), series
    assert not any('route="unmatched"' in s for s in series), series


class GatedRelay(GatedProvider):
    """The gated model, also relaying ``/v1`` bodies: each released piece is one chunk."""

    supports_passthrough = True

    async def passthrough(self, body: bytes) -> PassthroughResponse:
        self.started.set()
        streamed = b'"stream":true' in body.replace(b" ", b"")

        async def chunks() -> AsyncIterator[bytes]:
            while (piece := await self._pieces.get()) is not None:
                yield str(piece).encode()

        kind = "text/event-stream" if streamed else "application/json"
        return PassthroughResponse(200, kind, chunks())


@pytest.fixture
def gated() -> GatedRelay:
    return GatedRelay()


class TickingClock:
    """Stands for ``time`` in the metrics middleware: a microsecond passes at every read."""

    def __init__(self) -> None:
        self.now = 1000.0

    def perf_counter(self) -> float:
        self.now += 1e-6
        return self.now


def _histogram(text: str, name: str) -> dict[str, tuple[float, float]]:
    """``{route: (count, sum)}`` of a histogram in a /metrics text."""
    found: dict[str, list[float]] = {}
    for family in text_string_to_metric_families(text):
        if family.name != name:
            continue
        for sample in family.samples:
            entry = found.setdefault(sample.labels["route"], [0.0, 0.0])
            if sample.name == f"{name}_count":
                entry[0] = sample.value
            elif sample.name == f"{name}_sum":
                entry[1] = sample.value
    return {route: (count, total) for route, (count, total) in found.items()}


async def test_gateway_overhead_counts_model_calls_without_the_backend_wait(
    make_client: ClientFactory, gated: GatedRelay, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = TickingClock()
    monkeypatch.setattr(chatkeep.api.middleware.metrics, "time", clock)
    client = await make_client()
    conversation = (await client.post("/api/conversations", json={"model": "gated"})).json()
    send = f"/api/conversations/{conversation['id']}/messages"
    completion = {"model": "gated", "messages": [{"role": "user", "content": "hi"}]}
    calls = [
        (send, {"content": "json"}, ("a", "b")),
        (send, {"content": "streamed", "stream": True}, ("a", "b")),
        ("/v1/chat/completions", completion, ('{"choices": []}',)),
        ("/v1/chat/completions", {**completion, "stream": True}, ("data: {}\n\n",)),
    ]
    for url, body, pieces in calls:
        gated.started.clear()
        answer = asyncio.create_task(client.post(url, json=body))
        await asyncio.wait_for(gated.started.wait(), 5)
        clock.now += 5.0  # the backend thinks for five seconds
        gated.release(*pieces, None)
        assert (await asyncio.wait_for(answer, 5)).status_code == 200
    await client.get(f"/api/conversations/{conversation['id']}")  # no model called

    text = (await client.get("/metrics")).text
    overhead = _histogram(text, "chatkeep_gateway_overhead_seconds")
    duration = _histogram(text, "chatkeep_http_request_duration_seconds")
    routes = {"/api/conversations/{conversation_id}/messages", "/v1/chat/completions"}
    assert set(overhead) == routes
    for route in routes:
        count, spent = overhead[route]
        assert count == 2
        # Each request took over 5 s, all of it but a few clock ticks waiting on the backend.
        assert duration[route][1] >= 2 * 5.0
        assert 0 < spent < duration[route][1] / 1000


def test_backend_wait_counts_the_first_call_and_an_open_one_up_to_now() -> None:
    ticks = iter([10.0, 14.0, 20.0, 30.0])
    wait = BackendWait(lambda: next(ticks))
    assert wait.seconds(5.0) is None  # no model called
    wait.begin()  # 10
    assert wait.seconds(12.5) == 2.5  # still waiting: up to now
    wait.end()  # 14
    wait.begin()  # a second call (a summary, say) is not the request's
    wait.end()
    assert wait.seconds(99.0) == 4.0
