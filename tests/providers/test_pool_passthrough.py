"""The ``/v1`` passthrough through a pool: relayed byte for byte, failed over before its text.

A relayed stream's first token is its first event with content, not its first bytes:
an opening that carries only the role (or keep-alive comments) is read, held and relayed
first, and until text follows the attempt may still be hedged, timed out or failed over.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
import pytest

from chatkeep.errors import ProviderUnavailable
from chatkeep.providers.pool import ProviderPool
from tests.providers.conftest import StartFakeLLM, StartRawBackend
from tests.providers.pool_backends import (
    OPENING,
    FakeClock,
    ScriptedBackend,
    StartScripted,
    pool_model,
    registry_of,
    scripted_backends,
    sse_piece,
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


async def test_a_backend_refusing_its_key_is_not_relayed_and_another_answers(
    scripted: StartScripted,
) -> None:
    revoked = await scripted(status=401)
    spare = await scripted()
    model = pool_model(revoked.url, spare.url, balancing="ordered")

    async with registry_of({"m": model}) as registry:
        pool = registry.pools["m"]
        status, _ = await relay(pool)
        assert (status, revoked.requests, spare.requests) == (200, 1, 1)
        status, _ = await relay(pool)

        assert (status, revoked.requests, spare.requests) == (200, 1, 2)
        assert pool.backends[0].health.failures == 1
        assert pool.backends[0].breaker.state.value == "open"


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


async def arrived(backend: ScriptedBackend) -> None:
    """Wait (boundedly: the wait must not time out) for a request to reach ``backend``."""
    async with asyncio.timeout(5):
        await backend.arrived.wait()


async def disconnected(backend: ScriptedBackend) -> bool:
    """Wait (boundedly) for the backend to see a client leave; True when it did."""
    for _ in range(500):
        if backend.disconnects:
            return True
        await asyncio.sleep(0.01)
    return False


async def test_a_stream_is_relayed_byte_for_byte_with_its_opening(
    raw_backend: StartRawBackend,
) -> None:
    parts = [
        OPENING,
        b": still waiting\r\n\r\n",
        sse_piece("hel"),
        sse_piece("lo"),
        b"data: [DONE]\n\n",
    ]
    backend = await raw_backend(parts, content_type="text/event-stream; charset=utf-8")

    async with registry_of({"m": pool_model(backend.url)}) as registry:
        status, body = await relay(registry.pools["m"])

    assert status == 200
    assert body == b"".join(parts)


async def test_the_time_to_first_token_of_a_relay_is_its_first_text(
    scripted: StartScripted,
) -> None:
    clock = FakeClock()
    backend = await scripted(opening=OPENING, before_first=asyncio.Event())

    async with registry_of({"m": pool_model(backend.url)}, clock) as registry:
        pool = registry.pools["m"]
        answer = asyncio.ensure_future(pool.passthrough(BODY))
        await arrived(backend)
        await asyncio.sleep(0.05)  # time for the opening to arrive: it is not a first token
        assert not answer.done()
        clock.advance(0.3)
        assert backend.before_first is not None
        backend.before_first.set()
        relayed = await answer
        body = b"".join([chunk async for chunk in relayed.body])

    assert body.startswith(OPENING) and body.endswith(b"data: [DONE]\n\n")
    assert pool.backends[0].health.ewma_ttft == pytest.approx(0.3)


async def test_a_relay_whose_text_is_late_after_its_opening_is_hedged(
    scripted: StartScripted,
) -> None:
    slow = await scripted(opening=OPENING, before_first=asyncio.Event())
    fast = await scripted(opening=OPENING)
    model = pool_model(slow.url, fast.url, balancing="ordered", hedge_after_ms=10, hedge_budget=1)

    async with registry_of({"m": model}) as registry:
        pool = registry.pools["m"]
        status, body = await relay(pool)

        assert status == 200
        assert body == OPENING + b"".join(sse_piece(f"tok{i} ") for i in range(3)) + (
            b"data: [DONE]\n\n"
        )
        assert await disconnected(slow)  # the loser's upstream connection was closed
        assert (pool.backends[1].health.hedges_won, pool.budget.spent) == (1, 1)
        assert [b.health.inflight for b in pool.backends] == [0, 0]


async def test_the_attempt_timeout_bounds_the_wait_for_text_after_an_opening(
    scripted: StartScripted,
) -> None:
    hanging = await scripted(opening=OPENING, before_first=asyncio.Event())
    spare = await scripted()
    # Long enough that the spare's own first token fits in it on a loaded machine.
    model = pool_model(hanging.url, spare.url, balancing="ordered", attempt_timeout_seconds=0.5)

    async with registry_of({"m": model}) as registry:
        pool = registry.pools["m"]
        status, body = await relay(pool)

        assert status == 200 and not body.startswith(OPENING)  # all of it from the spare
        assert (hanging.answered, spare.answered, pool.retries) == (0, 1, 1)
        assert "no first token within 0.5 s" in (pool.backends[0].health.last_error or "")


async def test_a_backend_dying_after_its_opening_is_failed_over(scripted: StartScripted) -> None:
    dying = await scripted(opening=OPENING, die_after_opening=True)
    spare = await scripted()
    clock = FakeClock()
    model = pool_model(dying.url, spare.url, balancing="ordered")

    async with registry_of({"m": model}, clock) as registry:
        pool = registry.pools["m"]
        status, body = await relay(pool)

        assert status == 200 and body.endswith(b"data: [DONE]\n\n")
        assert not body.startswith(OPENING)  # nothing of the dead attempt reached the client
        assert (spare.answered, pool.retries, pool.backends[0].health.failures) == (1, 1, 1)


async def test_a_stream_that_ends_after_its_opening_is_tried_elsewhere(
    raw_backend: StartRawBackend, fake_llm: StartFakeLLM
) -> None:
    empty = await raw_backend([OPENING], content_type="text/event-stream")
    good = await fake_llm(tokens=2)
    clock = FakeClock()
    model = pool_model(empty.url, good.url, balancing="ordered")

    async with registry_of({"m": model}, clock) as registry:
        pool = registry.pools["m"]
        status, body = await relay(pool)

        assert status == 200 and body.endswith(b"data: [DONE]\n\n")
        assert len(empty.requests) == 1 and good.app.counts["none"] == 1
        assert "ended before its first token" in (pool.backends[0].health.last_error or "")
