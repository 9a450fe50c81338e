"""Hedged requests: the first token wins, the loser is cut off, the budget holds."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from chatkeep.errors import ProviderUnavailable
from chatkeep.fakellm import FakeLLMConfig
from chatkeep.providers.base import ChatRequest, Chunk
from chatkeep.providers.health import BackendHealth, BreakerState
from chatkeep.providers.hedging import ADAPTIVE_PERCENTILE, HedgeBudget, hedge_delay
from tests.providers.conftest import StartFakeLLM
from tests.providers.pool_backends import (
    FakeClock,
    ScriptedBackend,
    StartScripted,
    pool_model,
    registry_of,
    scripted_backends,
)

REQUEST = ChatRequest(messages=[{"role": "user", "content": "hi"}])


@pytest.fixture
async def scripted() -> AsyncIterator[StartScripted]:
    async with scripted_backends() as start:
        yield start


Collect = Callable[[AsyncIterator[Chunk]], Awaitable[tuple[list[Chunk], Exception | None]]]


async def disconnected(backend: ScriptedBackend) -> bool:
    """Wait (boundedly) for the backend to see a client leave; True when it did."""
    for _ in range(500):
        if backend.disconnects:
            return True
        await asyncio.sleep(0.01)
    return False


async def test_a_hedge_that_sends_a_token_first_wins_and_the_primary_is_cut_off(
    scripted: StartScripted, collect: Collect
) -> None:
    slow = await scripted(before_first=asyncio.Event())
    fast = await scripted()
    model = pool_model(slow.url, fast.url, balancing="ordered", hedge_after_ms=10, hedge_budget=1)

    async with registry_of({"m": model}) as registry:
        pool = registry.pools["m"]
        chunks, error = await collect(pool.stream(REQUEST))

        assert error is None
        assert "".join(c.text for c in chunks) == "tok0 tok1 tok2 "
        assert await disconnected(slow)  # the loser's upstream connection was closed
        assert slow.answered == 0
        assert (pool.backends[1].health.hedges_won, pool.backends[1].health.hedges_lost) == (1, 0)
        assert pool.budget.spent == 1
        assert [b.health.inflight for b in pool.backends] == [0, 0]


async def test_a_primary_that_sends_a_token_first_wins_and_the_hedge_is_cut_off(
    scripted: StartScripted, collect: Collect
) -> None:
    primary_gate, hedge_gate = asyncio.Event(), asyncio.Event()
    primary = await scripted(before_first=primary_gate)
    hedge = await scripted(before_first=hedge_gate)
    model = pool_model(
        primary.url, hedge.url, balancing="ordered", hedge_after_ms=5, hedge_budget=1
    )

    async with registry_of({"m": model}) as registry:
        pool = registry.pools["m"]
        reply = asyncio.ensure_future(collect(pool.stream(REQUEST)))
        for _ in range(500):  # both requests are upstream, neither has a token
            if hedge.requests:
                break
            await asyncio.sleep(0.01)
        primary_gate.set()
        chunks, error = await reply

        assert error is None and chunks
        assert await disconnected(hedge)
        assert primary.answered == 1 and hedge.answered == 0
        assert pool.backends[1].health.hedges_lost == 1


async def test_the_hedging_budget_holds_over_1000_replies(
    fake_llm: StartFakeLLM, collect: Collect
) -> None:
    first = await fake_llm(FakeLLMConfig(tokens=2))
    second = await fake_llm(FakeLLMConfig(tokens=2))
    # Hedge at once: every reply would hedge if the budget let it.
    model = pool_model(first.url, second.url, hedge_after_ms=0, hedge_budget=0.05)

    async with registry_of({"m": model}) as registry:
        pool = registry.pools["m"]
        for _ in range(100):
            results = await asyncio.gather(*(collect(pool.stream(REQUEST)) for _ in range(10)))
            assert all(error is None for _, error in results)

        sent = first.app.counts["none"] + second.app.counts["none"]
        hedges = pool.budget.spent
        assert 45 <= hedges <= 50  # used, and never past 5% of 1000
        assert sent == 1000 + hedges  # each hedge is exactly one extra request
        won_and_lost = sum(b.health.hedges_won + b.health.hedges_lost for b in pool.backends)
        assert won_and_lost == hedges


async def test_no_hedge_while_a_breaker_of_the_model_is_open(
    scripted: StartScripted, collect: Collect
) -> None:
    slow = await scripted(before_first=asyncio.Event())
    fast = await scripted()
    down = await scripted(status=503, retry_after="60")
    model = pool_model(
        down.url, slow.url, fast.url, balancing="ordered", hedge_after_ms=5, hedge_budget=1
    )

    async with registry_of({"m": model}) as registry:
        pool = registry.pools["m"]
        reply = asyncio.ensure_future(collect(pool.stream(REQUEST)))
        for _ in range(500):  # the 503 opened a breaker; the retry waits on the slow one
            if slow.requests:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # ten hedge delays: none may start
        assert fast.requests == 0
        assert slow.before_first is not None
        slow.before_first.set()
        _, error = await reply

    assert error is None
    assert fast.requests == 0
    assert pool.budget.spent == 0


async def test_a_backend_back_from_its_retry_after_may_be_hedged_to_as_its_trial(
    scripted: StartScripted, collect: Collect
) -> None:
    slow = await scripted(before_first=asyncio.Event())
    limited = await scripted()
    clock = FakeClock()
    model = pool_model(
        slow.url,
        limited.url,
        balancing="ordered",
        hedge_after_ms=5,
        hedge_budget=1,
        timeout_seconds=5.0,  # without a hedge the reply fails rather than hang
    )

    async with registry_of({"m": model}, clock) as registry:
        pool = registry.pools["m"]
        breaker = pool.backends[1].breaker
        told = ProviderUnavailable("busy", upstream_status=429, retry_after=2.0)
        assert breaker.failed(told, trial=False)
        clock.advance(2.0)  # no request reached it since: its time is over all the same

        chunks, error = await collect(pool.stream(REQUEST))

        assert error is None and chunks
        assert limited.requests == 1  # the hedge was its trial...
        assert breaker.state is BreakerState.CLOSED  # ...and closed the breaker
        assert pool.backends[1].health.hedges_won == 1


def test_the_budget_is_a_bounded_token_counter() -> None:
    budget = HedgeBudget(0.05)
    spent = 0
    for _ in range(1000):
        budget.earn()
        spent += budget.spend()
    assert spent == 49 or spent == 50  # float sums of 0.05: at most 5%, never more
    assert budget.refused == 1000 - spent

    quiet = HedgeBudget(0.05, burst=2.0)
    for _ in range(10_000):
        quiet.earn()
    assert quiet.tokens == 2.0  # a long quiet spell buys at most the burst
    assert [quiet.spend() for _ in range(3)] == [True, True, False]


def test_the_hedge_delay_is_fixed_or_twice_the_primarys_p90() -> None:
    assert ADAPTIVE_PERCENTILE == 0.9
    assert hedge_delay(None, 0.2) is None
    assert hedge_delay(250, None) == 0.25
    assert hedge_delay("adaptive", None) is None  # not enough samples yet
    assert hedge_delay("adaptive", 0.3) == 0.6
    assert hedge_delay("adaptive", 0.0) == 0.001


def adaptive_delay(health: BackendHealth) -> float:
    delay = hedge_delay("adaptive", health.ttft_percentile(ADAPTIVE_PERCENTILE))
    assert delay is not None
    return delay


def test_the_adaptive_delay_lets_normal_replies_by_and_catches_the_slow_ones() -> None:
    # A backend whose first token takes 10 to 19.9 ms, spread evenly.
    normal = [0.010 + 0.0001 * index for index in range(100)]
    health = BackendHealth(window=100, degraded_error_rate=0.5)
    for seconds in normal:
        health.first_token(seconds)
    p95 = health.p95_ttft()
    assert p95 is not None and sum(seconds > p95 for seconds in normal) == 5  # the budget
    assert not any(seconds > adaptive_delay(health) for seconds in normal)

    # The same backend 400 ms slow one time in twenty: the delay stays among the
    # normal replies, clear of them, and far below the slow ones.
    for seconds in normal[:95]:
        health.first_token(seconds)
    for _ in range(5):
        health.first_token(0.4)
    assert max(normal) < adaptive_delay(health) < 0.05


def test_slow_attempts_hedged_away_keep_the_adaptive_delay_where_it_is() -> None:
    # Once hedged, a slow attempt is cancelled before its token: only "at least the
    # delay" is known. Kept as that bound, the delay is a fixed point even when the slow
    # share is near one in ten; it would drift up if the bounds moved it.
    health = BackendHealth(window=100, degraded_error_rate=0.5)
    for index in range(100):
        health.first_token(0.010 + 0.0001 * index)
    delay = adaptive_delay(health)
    for round_ in range(20):
        for index in range(92):
            health.first_token(0.010 + 0.0001 * index)
        for _ in range(8):
            health.no_token_after(delay + 0.012)  # cut off when the hedge's token came
        assert adaptive_delay(health) == pytest.approx(delay), round_


async def test_adaptive_hedging_waits_for_enough_samples_then_uses_twice_the_p90(
    scripted: StartScripted, collect: Collect
) -> None:
    primary = await scripted()
    other = await scripted()
    # The fake clock stands still: every measured time to first token is 0, so the p90
    # is 0 and the adaptive delay its floor (1 ms) once 20 samples are in.
    clock = FakeClock()
    model = pool_model(
        primary.url, other.url, balancing="ordered", hedge_after_ms="adaptive", hedge_budget=1
    )

    async with registry_of({"m": model}, clock) as registry:
        pool = registry.pools["m"]
        primary.before_first = asyncio.Event()
        slow = asyncio.ensure_future(collect(pool.stream(REQUEST)))
        await asyncio.sleep(0.05)  # fifty floors: no sample yet, so no hedge may start
        assert other.requests == 0
        primary.before_first.set()
        await slow
        primary.before_first = None
        for _ in range(19):
            await collect(pool.stream(REQUEST))
        assert pool.backends[0].health.ttft_percentile(ADAPTIVE_PERCENTILE) == 0.0

        primary.before_first = asyncio.Event()
        chunks, error = await collect(pool.stream(REQUEST))

        assert error is None and chunks
        assert other.requests == 1
        assert pool.backends[1].health.hedges_won == 1
        assert await disconnected(primary)


async def test_a_hedged_away_primary_counts_what_it_waited_as_its_time_to_first_token(
    scripted: StartScripted, collect: Collect
) -> None:
    slow = await scripted(before_first=asyncio.Event())
    hedge = await scripted(before_first=asyncio.Event())
    clock = FakeClock()
    model = pool_model(slow.url, hedge.url, balancing="ordered", hedge_after_ms=10, hedge_budget=1)

    async with registry_of({"m": model}, clock) as registry:
        pool = registry.pools["m"]
        reply = asyncio.ensure_future(collect(pool.stream(REQUEST)))
        async with asyncio.timeout(5):  # must not fire
            await hedge.arrived.wait()
        clock.advance(0.5)
        assert hedge.before_first is not None
        hedge.before_first.set()
        chunks, error = await reply

        assert error is None and chunks
        primary, spare = (b.health for b in pool.backends)
        assert spare.hedges_won == 1 and await disconnected(slow)
        # The primary never sent a token: it waited at least 0.5 s, and its health says so
        # (a slow backend hedged away no longer looks fast).
        assert primary.ewma_ttft == pytest.approx(0.5)
        assert spare.ewma_ttft == pytest.approx(0.5)
