"""Failed authentication attempts per address: the limit, its refill, the bounded table."""

from __future__ import annotations

import pytest

from chatkeep.quotas.failures import FailedAttempts


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_address_is_refused_after_per_minute_failures() -> None:
    clock = Clock()
    attempts = FailedAttempts(per_minute=3, max_clients=10, clock=clock)
    for _ in range(3):
        assert attempts.retry_after("10.0.0.1") is None
        attempts.record("10.0.0.1")
    wait = attempts.retry_after("10.0.0.1")
    assert wait == pytest.approx(20.0)  # one attempt comes back every 60 / 3 seconds
    assert attempts.refused == 1
    assert attempts.retry_after("10.0.0.2") is None


def test_the_allowance_refills_at_per_minute_a_minute() -> None:
    clock = Clock()
    attempts = FailedAttempts(per_minute=3, max_clients=10, clock=clock)
    for _ in range(3):
        attempts.record("a")
    clock.now += 20
    assert attempts.retry_after("a") is None  # one attempt back
    attempts.record("a")
    assert attempts.retry_after("a") is not None
    clock.now += 60
    assert attempts.retry_after("a") is None
    assert len(attempts) == 0  # a whole allowance again: nothing remembered


def test_failures_spread_out_are_never_refused() -> None:
    clock = Clock()
    attempts = FailedAttempts(per_minute=6, max_clients=10, clock=clock)
    for _ in range(100):
        assert attempts.retry_after("a") is None
        attempts.record("a")
        clock.now += 10


def test_the_table_holds_at_most_max_clients_oldest_failure_out_first() -> None:
    clock = Clock()
    attempts = FailedAttempts(per_minute=1, max_clients=2, clock=clock)
    attempts.record("a")
    attempts.record("b")
    attempts.record("a")  # "a" failed last: "b" is now the oldest
    attempts.record("c")
    assert len(attempts) == 2 and attempts.evicted == 1
    assert attempts.retry_after("b") is None
    assert attempts.retry_after("a") is not None and attempts.retry_after("c") is not None
    for i in range(1000):
        attempts.record(f"10.1.{i // 256}.{i % 256}")
    assert len(attempts) == 2


def test_impossible_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        FailedAttempts(per_minute=0, max_clients=1)
    with pytest.raises(ValueError):
        FailedAttempts(per_minute=1, max_clients=0)
