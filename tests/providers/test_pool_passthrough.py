"""The ``/v1`` passthrough through a pool: relayed byte for byte, failed over before any byte."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
import pytest

from chatkeep.errors import ProviderUnavailable
from chatkeep.providers.pool import ProviderPool
from tests.providers.conftest import StartFakeLLM
from tests.providers.pool_backends import (
    FakeClock,
    StartScripted,
    pool_model,
    registry_of,
    scripted_backends,
)

BODY = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True})


@pytest.fixture
async def scripted() -> AsyncIterator[StartScripted]:
    async with scripted_backends() as start:
        yield start


async def relay(pool: ProviderPool) -> tuple[int, bytes]:
    answer = await pool.passthrough(BODY)
    return answer.status, b"".join([chunk async for chunk in answer.body])


async def test_a_pool_of_openai_backends_relays_and_reports_the_end(
    fake_llm: StartFakeLLM,
) -> None:
    backend = await fake_llm(tokens=2)
    async with registry_of({"m": pool_model(backend.url)}) as registry:
        pool = registry.pools["m"]
        assert pool.supports_passthrough

        status, body = await relay(pool)

        assert status == 200
        assert body.startswith(b"data: ") and body.endswith(b"data: [DONE]\n\n")
        health = pool.backends[0].health
        assert (health.inflight, health.samples, health.failures) == (0, 1, 0)


async def test_a_500_or_429_answer_is_tried_on_another_backend(
    fake_llm: StartFakeLLM, scripted: StartScripted
) -> None:
    failing = await fake_llm(fail_rate=1.0)
    limited = await scripted(status=429, retry_after="5")
    good = await fake_llm(tokens=2)
    clock = FakeClock()
    model = pool_model(failing.url, limited.url, good.url, balancing="ordered")

    async with registry_of({"m": model}, clock) as registry:
        pool = registry.pools["m"]
        status, body = await relay(pool)

        assert status == 200 and body.endswith(b"data: [DONE]\n\n")
        assert (failing.app.counts["fail"], limited.requests, good.app.counts["none"]) == (1, 1, 1)
        assert pool.backends[1].breaker.reopens_in() == 5.0


async def test_a_4xx_answer_is_relayed_as_it_is_and_not_retried(scripted: StartScripted) -> None:
    refusing = await scripted(status=400)
    spare = await scripted()
    model = pool_model(refusing.url, spare.url, balancing="ordered")

    async with registry_of({"m": model}) as registry:
        status, body = await relay(registry.pools["m"])

    assert status == 400
    assert orjson.loads(body) == {"error": {"message": "scripted 400"}}
    assert (refusing.requests, spare.requests) == (1, 0)


async def test_when_every_try_fails_the_last_error_is_raised(fake_llm: StartFakeLLM) -> None:
    failing = await fake_llm(fail_rate=1.0)
    clock = FakeClock()
    model = pool_model(failing.url, attempts=2, breaker_failures=5)

    async with registry_of({"m": model}, clock) as registry:
        with pytest.raises(ProviderUnavailable, match="answered 500"):
            await registry.pools["m"].passthrough(BODY)

    assert failing.app.counts["fail"] == 2


async def test_a_relay_closed_early_gives_its_backend_back(scripted: StartScripted) -> None:
    hold = asyncio.Event()
    backend = await scripted(after_first=hold)

    async with registry_of({"m": pool_model(backend.url)}) as registry:
        pool = registry.pools["m"]
        answer = await pool.passthrough(BODY)
        assert (await anext(answer.body)).startswith(b"data: ")
        aclose = getattr(answer.body, "aclose")  # noqa: B009 - the relay's own close
        await aclose()

        health = pool.backends[0].health
        assert health.inflight == 0
        assert health.samples == 0  # its client left: no verdict on the backend
        hold.set()
