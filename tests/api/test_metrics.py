"""Prometheus metrics: what is exposed, and that labels stay bounded."""

from __future__ import annotations

import re

import httpx

from chatkeep.memory.governor import MemoryGovernor
from chatkeep.memory.profiler import MemoryProfiler
from chatkeep.memory.sampler import MemoryReading, MemorySampler
from chatkeep.memory.watch import MemoryWatch
from tests.api.conftest import ClientFactory


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
