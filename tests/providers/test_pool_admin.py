"""What a pool shows: ``/admin/providers`` and its Prometheus series per model and backend."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import httpx
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from chatkeep.api import provider_routes
from chatkeep.app import create_app
from chatkeep.providers.base import ChatRequest, Chunk
from chatkeep.providers.pool_report import model_report
from chatkeep.providers.registry import ProviderRegistry
from chatkeep.settings import ModelConfig, Settings
from tests.providers.conftest import StartFakeLLM
from tests.providers.pool_backends import FakeClock, pool_model, registry_of

REQUEST = ChatRequest(messages=[{"role": "user", "content": "hi"}])

Collect = Callable[[AsyncIterator[Chunk]], Awaitable[tuple[list[Chunk], Exception | None]]]


@contextlib.asynccontextmanager
async def admin_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    app.include_router(provider_routes.router)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ck") as client,
    ):
        yield client


async def test_admin_providers_shows_each_backend_of_a_pool(
    fake_llm: StartFakeLLM, tmp_path: Path
) -> None:
    up = await fake_llm(tokens=2)
    down = await fake_llm()
    await down.aclose()
    models = {
        "echo": ModelConfig(provider="echo"),
        "pooled": pool_model(up.url, down.url, breaker_failures=1, hedge_after_ms=500),
    }
    settings = Settings(data_dir=tmp_path, models=models, storage="memory")

    async with admin_client(settings) as client:
        for _ in range(2):
            answer = await client.post(
                "/v1/chat/completions",
                json={"model": "pooled", "messages": [{"role": "user", "content": "hi"}]},
            )
            assert answer.status_code == 200
        report = (await client.get("/admin/providers")).json()

    echo, pooled = report["models"]
    assert echo == {"model": "echo", "provider": "echo", "pooled": False, "backends": []}
    assert pooled["pooled"] is True
    assert pooled["balancing"] == "least_inflight"
    assert pooled["hedging"]["after_ms"] == 500
    b0, b1 = pooled["backends"]
    assert (b0["name"], b0["state"], b0["inflight"], b0["failures"]) == ("b0", "healthy", 0, 0)
    assert b0["ewma_ttft_ms"] is not None and b0["error_rate"] == 0.0
    assert b0["hedges"] == {"won": 0, "lost": 0, "after_ms": 500.0}
    assert (b1["name"], b1["state"], b1["breaker"]["state"]) == ("b1", "cooldown", "open")
    assert b1["breaker"]["waits_for_probe"] is True
    assert "cannot connect" in b1["last_error"]
    assert b1["backend"] == f"openai at {down.url}"


async def test_admin_providers_needs_the_admin_token(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, storage="memory", admin_token="s3cret")

    async with admin_client(settings) as client:
        refused = await client.get("/admin/providers")
        allowed = await client.get("/admin/providers", headers={"Authorization": "Bearer s3cret"})

    assert refused.status_code == 401
    assert allowed.status_code == 200


class _Families(Collector):
    def __init__(self, registry: ProviderRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        return self._registry.metric_families()


async def test_metric_series_are_per_model_and_configured_backend_name(
    fake_llm: StartFakeLLM, collect: Collect
) -> None:
    backend = await fake_llm(tokens=2)
    clock = FakeClock()
    models = {"m": pool_model(backend.url, backend.url), "echo": ModelConfig(provider="echo")}

    async with registry_of(models, clock) as registry:
        for _ in range(4):
            await collect(registry.pools["m"].stream(REQUEST))
        prometheus = CollectorRegistry()
        prometheus.register(_Families(registry))
        text = generate_latest(prometheus).decode()

    assert 'chatkeep_provider_backend_requests_total{backend="b0",model="m"} 2.0' in text
    assert 'chatkeep_provider_backend_requests_total{backend="b1",model="m"} 2.0' in text
    assert 'chatkeep_provider_backend_state{backend="b0",model="m",state="healthy"} 1.0' in text
    assert (
        'chatkeep_provider_backend_hedges_total{backend="b1",model="m",outcome="won"} 0.0' in text
    )
    assert 'chatkeep_provider_retries_total{model="m"} 0.0' in text
    assert 'model="echo"' not in text  # a plain provider has no pool series


async def test_an_adaptive_pool_shows_each_backends_learnt_hedge_delay(
    fake_llm: StartFakeLLM, collect: Collect
) -> None:
    backend = await fake_llm(tokens=2)
    clock = FakeClock()
    models = {"m": pool_model(backend.url, hedge_after_ms="adaptive")}

    async with registry_of(models, clock) as registry:
        pool = registry.pools["m"]
        learning = model_report("m", models["m"], pool)["backends"][0]["hedges"]["after_ms"]
        for seconds in range(1, 21):  # 1..20 ms to first token: the p90 is 18 ms
            pool.backends[0].health.first_token(seconds / 1000.0)
        learnt = model_report("m", models["m"], pool)["backends"][0]["hedges"]["after_ms"]

    assert learning is None  # fewer than 20 samples: no hedge yet
    assert learnt == 36.0  # twice the p90
