"""Breakers, passive health and balancing: who gets traffic, and when again.

Every time here is an injected clock's; nothing sleeps.
"""

from __future__ import annotations

import collections
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import orjson
import pytest

from chatkeep.errors import Overloaded, ProviderError, ProviderUnavailable, RateLimited
from chatkeep.providers.balancing import Balancer
from chatkeep.providers.base import ChatRequest, Chunk
from chatkeep.providers.health import BackendHealth, Breaker, BreakerState
from chatkeep.providers.http import parse_retry_after
from tests.providers.pool_backends import (
    FakeClock,
    StartScripted,
    pool_model,
    registry_of,
    scripted_backends,
)

REQUEST = ChatRequest(messages=[{"role": "user", "content": "hi"}])
BODY = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]})


@pytest.fixture
async def scripted() -> AsyncIterator[StartScripted]:
    async with scripted_backends() as start:
        yield start


Collect = Callable[[AsyncIterator[Chunk]], Awaitable[tuple[list[Chunk], Exception | None]]]


async def test_a_429_with_retry_after_2_gets_no_traffic_for_2_seconds(
    scripted: StartScripted, collect: Collect
) -> None:
    limited = await scripted(script=[429], retry_after="2")
    spare = await scripted()
    clock = FakeClock()
    model = pool_model(limited.url, spare.url, balancing="ordered")

    async with registry_of({"m": model}, clock) as registry:
        pool = registry.pools["m"]
        _, error = await collect(pool.stream(REQUEST))
        assert error is None  # served by the spare
        assert (limited.requests, spare.requests) == (1, 1)

        for step in (0.0, 1.0, 0.99):
            clock.advance(step)
            _, error = await collect(pool.stream(REQUEST))
            assert error is None
        assert limited.requests == 1  # 1.99 s on: still none, though it is first in order

        clock.advance(0.01)
        _, error = await collect(pool.stream(REQUEST))

        assert error is None
        assert limited.requests == 2  # its trial, and it closed the breaker
        assert pool.backends[0].breaker.state is BreakerState.CLOSED
        assert clock.slept == []  # another backend was there: nobody waited


async def test_a_lone_backend_asking_to_retry_after_is_waited_for_within_the_deadline(
    scripted: StartScripted, collect: Collect
) -> None:
    limited = await scripted(script=[429], retry_after="2")
    clock = FakeClock()

    async with registry_of({"m": pool_model(limited.url)}, clock) as registry:
        chunks, error = await collect(registry.pools["m"].stream(REQUEST))

    assert error is None
    assert chunks
    assert clock.slept == [2.0]
    assert limited.requests == 2


async def test_a_retry_after_longer_than_the_deadline_is_not_waited_for(
    scripted: StartScripted, collect: Collect
) -> None:
    limited = await scripted(status=429, retry_after="60")
    clock = FakeClock()
    model = pool_model(limited.url, timeout_seconds=30.0)

    async with registry_of({"m": model}, clock) as registry:
        with pytest.raises(RateLimited) as refused:
            await collect(registry.pools["m"].stream(REQUEST))

    assert refused.value.status_code == 429
    assert refused.value.retry_after == 60.0  # the client is told when to come back
    assert clock.slept == []
    assert limited.requests == 1


async def test_a_pool_every_backend_of_which_rate_limits_answers_429_with_the_soonest_retry(
    scripted: StartScripted,
) -> None:
    first = await scripted(status=429, retry_after="5")
    second = await scripted(status=429, retry_after="3")
    clock = FakeClock()
    model = pool_model(first.url, second.url, balancing="ordered", timeout_seconds=2.5)

    async with registry_of({"m": model}, clock) as registry:
        pool = registry.pools["m"]
        with pytest.raises(RateLimited) as refused:
            await pool.passthrough(BODY)
        assert refused.value.retry_after == 3.0
        assert (first.requests, second.requests) == (1, 1)

        # Both out for their Retry-After now: the next reply is told so at once.
        with pytest.raises(Overloaded) as out:
            await pool.passthrough(BODY)
        assert out.value.retry_after == 3.0
        assert (first.requests, second.requests) == (1, 1)


async def test_429_and_503_together_answer_503_with_the_soonest_retry(
    scripted: StartScripted,
) -> None:
    first = await scripted(status=503, retry_after="7")
    second = await scripted(status=429, retry_after="9")
    clock = FakeClock()
    model = pool_model(first.url, second.url, balancing="ordered", timeout_seconds=5.0)

    async with registry_of({"m": model}, clock) as registry:
        with pytest.raises(Overloaded) as refused:
            await registry.pools["m"].passthrough(BODY)

    assert type(refused.value) is Overloaded
    assert refused.value.status_code == 503
    assert refused.value.retry_after == 7.0


def failure(status: int | None = None, retry_after: float | None = None) -> ProviderError:
    return ProviderUnavailable("boom", upstream_status=status, retry_after=retry_after)


def test_a_breaker_opens_after_consecutive_failures_and_needs_a_probe() -> None:
    clock = FakeClock()
    breaker = Breaker(failures=3, cooldown=10.0, max_retry_after=300.0, clock=clock)

    assert not breaker.failed(failure(500), trial=False)
    breaker.succeeded(trial=False)  # a success in between: the count starts again
    assert not breaker.failed(failure(500), trial=False)
    assert not breaker.failed(failure(500), trial=False)
    assert breaker.failed(failure(500), trial=False)

    assert breaker.state is BreakerState.OPEN
    assert not breaker.allows() and not breaker.needs_probe()
    clock.advance(10.0)
    assert not breaker.allows()  # cooldown over, but only a probe can bring it back
    assert breaker.needs_probe() and breaker.reopens_in() is None
    breaker.probed(ok=True)
    assert breaker.state is BreakerState.HALF_OPEN and breaker.allows()


def test_half_open_lets_one_trial_through_which_closes_or_reopens_it() -> None:
    clock = FakeClock()
    breaker = Breaker(failures=1, cooldown=5.0, max_retry_after=300.0, clock=clock)
    breaker.failed(failure(), trial=False)
    clock.advance(5.0)
    breaker.probed(ok=True)

    assert breaker.begin() is True
    assert not breaker.allows()  # one trial at a time
    breaker.abandoned(trial=True)  # its client left: another request may be the trial
    assert breaker.allows()
    assert breaker.begin() is True
    assert breaker.failed(failure(), trial=True)
    assert breaker.state is BreakerState.OPEN
    assert breaker.open_until == clock.now + 5.0

    clock.advance(5.0)
    breaker.probed(ok=True)
    trial = breaker.begin()
    breaker.succeeded(trial)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.begin() is False


def test_429_and_503_open_the_breaker_for_the_time_the_backend_gave() -> None:
    clock = FakeClock()
    breaker = Breaker(failures=5, cooldown=10.0, max_retry_after=30.0, clock=clock)

    assert breaker.failed(failure(503, retry_after=3.0), trial=False)
    assert breaker.reopens_in() == 3.0
    clock.advance(3.0)
    assert breaker.allows() and not breaker.needs_probe()  # no probe: the backend said when

    breaker.succeeded(breaker.begin())
    assert breaker.failed(failure(429, retry_after=3600.0), trial=False)
    assert breaker.reopens_in() == 30.0  # capped: a header is data from the network

    clock.advance(30.0)
    breaker.succeeded(breaker.begin())
    assert breaker.failed(failure(429), trial=False)  # no Retry-After: a cooldown
    assert breaker.reopens_in() is None


def test_a_breaker_whose_retry_after_has_passed_reads_half_open_without_a_request() -> None:
    clock = FakeClock()
    breaker = Breaker(failures=5, cooldown=10.0, max_retry_after=30.0, clock=clock)
    health = BackendHealth(window=10, degraded_error_rate=0.5)
    assert breaker.failed(failure(429, retry_after=2.0), trial=False)
    assert (breaker.state, health.state(breaker)) == (BreakerState.OPEN, "cooldown")

    clock.advance(2.0)

    # What balancing, hedging and /admin/providers read: one trial may go now.
    assert breaker.state is BreakerState.HALF_OPEN
    assert health.state(breaker) == "degraded"
    assert breaker.reopens_in() == 0.0
    assert breaker.allows()
    assert breaker.begin() is True
    assert not breaker.allows()  # exactly one trial


def test_a_breaker_opened_by_failures_stays_open_until_a_probe() -> None:
    clock = FakeClock()
    breaker = Breaker(failures=1, cooldown=10.0, max_retry_after=30.0, clock=clock)
    assert breaker.failed(failure(500), trial=False)

    clock.advance(60.0)

    assert breaker.state is BreakerState.OPEN
    assert breaker.needs_probe() and not breaker.allows()


def test_retry_after_is_read_as_seconds_or_an_http_date() -> None:
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after("-4") == 0.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    for unreadable in (None, "", "soon", "nan", "inf", "Wed, 21 Oct 2015 07:28:10"):
        assert parse_retry_after(unreadable) is None


def test_health_keeps_a_bounded_window_and_calls_a_failing_backend_degraded() -> None:
    clock = FakeClock()
    breaker = Breaker(failures=100, cooldown=1.0, max_retry_after=1.0, clock=clock)
    health = BackendHealth(window=20, degraded_error_rate=0.25)
    for _ in range(1000):
        health.outcome(True)
        health.first_token(0.1)
    assert health.samples == 20 and health.error_rate == 0.0
    assert health.state(breaker) == "healthy"

    for _ in range(5):
        health.outcome(False)
    assert health.error_rate == 0.25
    assert health.state(breaker) == "degraded"
    for _ in range(20):
        health.outcome(True)
    assert health.error_rate == 0.0  # failures leave the window as it moves on
    assert health.failures == 5


def test_health_tracks_the_time_to_first_token() -> None:
    health = BackendHealth(window=100, degraded_error_rate=0.5)
    assert health.p95_ttft() is None
    for index in range(100):
        health.first_token(0.01 * (index + 1))

    assert health.p95_ttft() == pytest.approx(0.95)
    assert health.ewma_ttft is not None and 0.9 < health.ewma_ttft < 1.0


@dataclass
class Member:
    name: str
    weight: float = 1.0
    inflight: int = 0
    ewma_ttft: float | None = None


def test_weighted_balancing_gives_each_backend_its_share_interleaved() -> None:
    members = [Member("a", weight=3.0), Member("b", weight=1.0)]
    balancer = Balancer("weighted")

    picks = [balancer.choose(members).name for _ in range(8)]

    assert collections.Counter(picks) == {"a": 6, "b": 2}
    assert picks[:4].count("b") == 1  # interleaved, not a burst of a then b


def test_least_inflight_spreads_ties_and_prefers_the_idle() -> None:
    members = [Member("a"), Member("b"), Member("c")]
    balancer = Balancer("least_inflight")

    assert {balancer.choose(members).name for _ in range(3)} == {"a", "b", "c"}
    members[0].inflight = members[2].inflight = 2
    assert {balancer.choose(members).name for _ in range(5)} == {"b"}


def test_latency_and_ordered_balancing() -> None:
    members = [Member("slow", ewma_ttft=0.5), Member("fast", ewma_ttft=0.1)]
    assert Balancer("latency").choose(members).name == "fast"
    members[1].inflight = 9  # fast but busy: 0.1 * 10 > 0.5 * 1
    assert Balancer("latency").choose(members).name == "slow"
    members.append(Member("new"))  # never measured: tried first
    assert Balancer("latency").choose(members).name == "new"
    assert Balancer("ordered").choose(members).name == "slow"
