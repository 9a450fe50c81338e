"""A provider pool keeps replies flowing: failover, probing back in, and what is retried.

Backends are `chatkeep fake-llm` servers where a fault rate says it all, and scripted
backends where a test needs one request at a time to behave in a given way.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from chatkeep.errors import (
    Overloaded,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    StreamCut,
)
from chatkeep.fakellm import FakeLLMConfig, start_fake_llm
from chatkeep.providers.base import ChatRequest, Chunk
from chatkeep.providers.health import BreakerState
from chatkeep.providers.pool import NoBackendAvailable, ProviderPool
from tests.providers.conftest import StartFakeLLM
from tests.providers.pool_backends import (
    FakeClock,
    StartScripted,
    pool_model,
    registry_of,
    scripted_backends,
)

#: What a `ScriptedBackend` of 3 tokens replies.
SCRIPTED_REPLY = "tok0 tok1 tok2 "
REQUEST = ChatRequest(messages=[{"role": "user", "content": "hi"}])


@pytest.fixture
async def scripted() -> AsyncIterator[StartScripted]:
    async with scripted_backends() as start:
        yield start


Collect = Callable[[AsyncIterator[Chunk]], Awaitable[tuple[list[Chunk], Exception | None]]]


def text(chunks: list[Chunk]) -> str:
    return "".join(chunk.text for chunk in chunks)


async def test_one_of_three_backends_down_costs_no_reply_and_is_probed_back_in(
    fake_llm: StartFakeLLM, collect: Collect
) -> None:
    servers = [await fake_llm(tokens=3) for _ in range(3)]
    down = servers[1]
    port = down.port
    await down.aclose()
    clock = FakeClock()
    model = pool_model(*(s.url for s in servers), breaker_failures=2)

    async with registry_of({"m": model}, clock) as registry:
        pool = registry.pools["m"]
        results = [await collect(pool.stream(REQUEST)) for _ in range(30)]

        assert [error for _, error in results if error is not None] == []
        assert all(text(chunks) == "tok0 tok1 tok2" for chunks, _ in results)
        b1 = pool.backends[1]
        assert b1.health.state(b1.breaker) == "cooldown"
        # Out of rotation: two failed tries opened its breaker, and nothing went after.
        assert b1.health.requests == 2
        assert pool.retries == 2

        # Still down when its cooldown ends: the probe fails, another cooldown starts.
        clock.advance(model.breaker_cooldown_seconds)
        assert await pool.prober.probe_due() == 1
        assert b1.breaker.state.value == "open"
        assert "probe" in (b1.health.last_error or "")

        async with await start_fake_llm(FakeLLMConfig(tokens=3), port=port) as revived:
            clock.advance(model.breaker_cooldown_seconds)
            assert await pool.prober.probe_due() == 1
            assert b1.breaker.state.value == "half_open"
            results = [await collect(pool.stream(REQUEST)) for _ in range(6)]

            assert [error for _, error in results if error is not None] == []
            assert b1.breaker.state.value == "closed"
            assert revived.app.counts["none"] >= 1  # it serves replies again
        await pool.aclose()  # its prober task is gone before the loop ends


async def test_a_killed_backend_cuts_only_replies_that_had_a_token(
    scripted: StartScripted, collect: Collect
) -> None:
    hold = asyncio.Event()
    doomed = await scripted(after_first=hold)
    spare = await scripted()
    model = pool_model(doomed.url, spare.url, balancing="ordered")

    async with registry_of({"m": model}) as registry:
        pool = registry.pools["m"]
        # Three replies get their first token from the doomed backend and stay open.
        streamed = [pool.stream(REQUEST) for _ in range(3)]
        firsts = [await anext(stream) for stream in streamed]
        assert [chunk.text for chunk in firsts] == ["tok0 "] * 3
        # Two more are sent to it but get nothing before it dies.
        doomed.after_first = None
        doomed.before_first = asyncio.Event()
        doomed.arrived.clear()
        waiting = [asyncio.ensure_future(collect(pool.stream(REQUEST))) for _ in range(2)]
        for _ in range(500):
            if doomed.requests == 5:
                break
            await asyncio.sleep(0.01)
        assert doomed.requests == 5

        await doomed.stop()

        for stream in streamed:
            _, error = await collect(stream)
            assert isinstance(error, StreamCut)  # ends incomplete, never restarted
        for chunks, error in await asyncio.gather(*waiting):
            assert error is None
            assert text(chunks) == SCRIPTED_REPLY  # completed elsewhere
        assert spare.answered == 2


async def test_a_400_is_never_retried(scripted: StartScripted, collect: Collect) -> None:
    first = await scripted(status=400)
    second = await scripted()
    async with registry_of({"m": pool_model(first.url, second.url, balancing="ordered")}) as reg:
        pool = reg.pools["m"]

        _, error = await collect(pool.stream(REQUEST))

        assert type(error) is ProviderError
        assert error.upstream_status == 400
        assert (first.requests, second.requests) == (1, 0)
        # The backend answered: it is up, whatever the request was.
        assert pool.backends[0].breaker.consecutive_failures == 0


@pytest.mark.parametrize("status", [401, 403, 404])
async def test_a_backend_refusing_its_key_or_model_is_taken_out_and_the_reply_served_elsewhere(
    scripted: StartScripted, collect: Collect, status: int
) -> None:
    refusing = await scripted(status=status)
    spare = await scripted()
    clock = FakeClock()
    model = pool_model(refusing.url, spare.url, balancing="least_inflight")

    async with registry_of({"m": model}, clock) as registry:
        pool = registry.pools["m"]
        results = [await collect(pool.stream(REQUEST)) for _ in range(10)]

        assert [error for _, error in results] == [None] * 10
        # One answer opened its breaker: it answers at once, so it must not stay chosen.
        assert refusing.requests == 1
        assert spare.requests == 10
        bad = pool.backends[0]
        assert bad.health.failures == 1
        assert bad.breaker.state is BreakerState.OPEN
        assert bad.health.state(bad.breaker) == "cooldown"
        assert f"answered {status}" in (bad.health.last_error or "")
        assert clock.slept == []


async def test_when_every_backend_refuses_its_key_the_last_error_is_raised(
    scripted: StartScripted, collect: Collect
) -> None:
    first = await scripted(status=401)
    second = await scripted(status=401)
    clock = FakeClock()
    model = pool_model(first.url, second.url, balancing="ordered", attempts=5)

    async with registry_of({"m": model}, clock) as registry:
        _, error = await collect(registry.pools["m"].stream(REQUEST))

    assert isinstance(error, ProviderError)
    assert error.upstream_status == 401
    assert error.status_code == 502
    assert (first.requests, second.requests) == (1, 1)  # both out: nothing left to try
    assert clock.slept == []


@pytest.mark.parametrize("attempts", [1, 3])
async def test_a_500_is_retried_at_most_the_configured_times(
    fake_llm: StartFakeLLM, collect: Collect, attempts: int
) -> None:
    failing = await fake_llm(fail_rate=1.0)
    clock = FakeClock()
    model = pool_model(failing.url, attempts=attempts, breaker_failures=10)

    async with registry_of({"m": model}, clock) as registry:
        _, error = await collect(registry.pools["m"].stream(REQUEST))

    assert isinstance(error, ProviderUnavailable)
    assert error.upstream_status == 500
    assert failing.app.counts["fail"] == attempts
    assert len(clock.slept) == attempts - 1  # backed off before each retry of the same backend


async def test_retries_stop_at_the_total_deadline(
    scripted: StartScripted, collect: Collect
) -> None:
    # Each answer asks for 4 s; a 10 s deadline has room for tries at 0, 4 and 8 s.
    busy = await scripted(status=503, retry_after="4")
    clock = FakeClock()
    model = pool_model(busy.url, attempts=10, timeout_seconds=10.0)

    async with registry_of({"m": model}, clock) as registry:
        started = clock.now
        with pytest.raises(Overloaded) as refused:
            await collect(registry.pools["m"].stream(REQUEST))

    assert refused.value.status_code == 503 and refused.value.retry_after == 4.0
    assert busy.requests == 3
    assert clock.slept == [4.0, 4.0]
    assert clock.now - started == 8.0  # no wait was begun that would end past the deadline


async def test_an_attempt_without_a_first_token_in_time_fails_over(
    scripted: StartScripted, collect: Collect
) -> None:
    hung = await scripted(before_first=asyncio.Event())
    spare = await scripted()
    # Long enough that the spare's own first token fits in it on a loaded machine.
    model = pool_model(hung.url, spare.url, balancing="ordered", attempt_timeout_seconds=0.5)

    async with registry_of({"m": model}) as registry:
        chunks, error = await collect(registry.pools["m"].stream(REQUEST))
        for _ in range(100):  # the cancelled request's handler sees its client leave
            if hung.disconnects:
                break
            await asyncio.sleep(0.01)

    assert error is None
    assert text(chunks) == SCRIPTED_REPLY
    assert hung.disconnects == 1
    assert "no first token within 0.5 s" in (
        registry.pools["m"].backends[0].health.last_error or ""
    )


async def test_with_every_backend_out_a_reply_fails_at_once(
    fake_llm: StartFakeLLM, collect: Collect
) -> None:
    failing = await fake_llm(fail_rate=1.0)
    clock = FakeClock()
    model = pool_model(failing.url, attempts=1, breaker_failures=1)

    async with registry_of({"m": model}, clock) as registry:
        pool: ProviderPool = registry.pools["m"]
        await collect(pool.stream(REQUEST))
        _, error = await collect(pool.stream(REQUEST))
        await pool.aclose()

    assert isinstance(error, NoBackendAvailable)
    assert "until a probe answers" in error.message
    assert failing.app.counts["fail"] == 1


async def test_timeouts_are_provider_timeouts(scripted: StartScripted, collect: Collect) -> None:
    hung = await scripted(before_first=asyncio.Event())
    model = pool_model(hung.url, attempts=1, attempt_timeout_seconds=0.02)

    async with registry_of({"m": model}) as registry:
        _, error = await collect(registry.pools["m"].stream(REQUEST))

    assert isinstance(error, ProviderTimeout)


async def test_a_reply_finding_every_backend_busy_waits_for_a_slot_without_using_an_attempt(
    scripted: StartScripted, collect: Collect
) -> None:
    gate = asyncio.Event()
    slow = await scripted(before_first=gate)
    clock = FakeClock()
    model = pool_model(slow.url, attempts=1, max_connections=1)

    async with registry_of({"m": model}, clock) as registry:
        pool = registry.pools["m"]
        first = asyncio.ensure_future(collect(pool.stream(REQUEST)))
        for _ in range(500):
            if slow.requests:
                break
            await asyncio.sleep(0.01)
        second = asyncio.ensure_future(collect(pool.stream(REQUEST)))
        for _ in range(5):
            await asyncio.sleep(0)
        assert not second.done() and slow.requests == 1  # waiting, not failed

        gate.set()
        results = [await first, await second]

        assert [error for _, error in results] == [None, None]
        assert [text(chunks) for chunks, _ in results] == [SCRIPTED_REPLY] * 2
        assert slow.requests == 2
        assert pool.retries == 0 and clock.slept == []


async def test_a_busy_pool_refuses_with_503_and_retry_after_once_the_deadline_passes(
    scripted: StartScripted, collect: Collect
) -> None:
    idle = await scripted()
    model = pool_model(idle.url, max_connections=1, timeout_seconds=0.05)

    async with registry_of({"m": model}) as registry:
        pool = registry.pools["m"]
        pool.backends[0].health.inflight = 1  # its one slot taken by a reply still running
        with pytest.raises(Overloaded) as refused:
            await collect(pool.stream(REQUEST))
        pool.backends[0].health.inflight = 0

    assert refused.value.status_code == 503 and refused.value.retry_after > 0
    assert "in-flight bound (1 requests)" in refused.value.message
    assert idle.requests == 0


async def test_the_probe_task_brings_a_backend_back_and_then_ends(
    scripted: StartScripted, collect: Collect
) -> None:
    flaky = await scripted()
    spare = await scripted()
    clock = FakeClock()
    model = pool_model(
        flaky.url, spare.url, balancing="ordered", breaker_failures=1, probe_interval_seconds=0.01
    )

    async with registry_of({"m": model}, clock) as registry:
        pool = registry.pools["m"]
        await flaky.stop()
        _, error = await collect(pool.stream(REQUEST))
        assert error is None
        assert pool.prober.running  # woken by the breaker that opened

        await flaky.start()  # back on the same port
        clock.advance(model.breaker_cooldown_seconds)
        for _ in range(500):
            if not pool.prober.running:
                break
            await asyncio.sleep(0.01)

        assert not pool.prober.running  # nothing left out of rotation: the task ended
        assert pool.backends[0].breaker.state.value == "half_open"
        assert flaky.probes >= 1
        await collect(pool.stream(REQUEST))
        assert flaky.answered == 1  # its trial
        assert pool.backends[0].breaker.state.value == "closed"
