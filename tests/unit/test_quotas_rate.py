"""Request rates per key: bursts, sustained rate, Retry-After, and the bounds of the table."""

from __future__ import annotations

import math
import threading
from dataclasses import replace

import limits.storage.memory
import limits.strategies
import pytest

import chatkeep.quotas.rate
from chatkeep.domain.keys import ApiKey, KeyLimits
from chatkeep.quotas.rate import KeyRateLimiter, rate_items


class FakeTime:
    """Stands for the ``time`` module inside `limits` (which reads ``time.time()``)."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def time(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def wall(monkeypatch: pytest.MonkeyPatch) -> FakeTime:
    """The wall clock `limits` and the rate limiter read, stepped by the test."""
    fake = FakeTime()
    for module in (limits.storage.memory, limits.strategies, chatkeep.quotas.rate):
        monkeypatch.setattr(module, "time", fake)
    return fake


def make_key(key_id: str = "k1", *, rate: float = 20.0, burst: int = 40) -> ApiKey:
    return ApiKey(
        id=key_id,
        owner_id="owner",
        label=None,
        limits=KeyLimits(rate=rate, burst=burst, max_streams=4, priority=0),
        created_at=0.0,
        created_by="admin",
    )


def allowed_over(
    limiter: KeyRateLimiter, key: ApiKey, wall: FakeTime, seconds: float, every: float
) -> int:
    """Requests allowed when ``key`` asks every ``every`` seconds for ``seconds``."""
    allowed = 0
    for _ in range(round(seconds / every)):
        if limiter.hit(key) is None:
            allowed += 1
        wall.advance(every)
    return allowed


def test_a_burst_is_allowed_at_once_and_the_next_request_waits(wall: FakeTime) -> None:
    limiter = KeyRateLimiter(max_keys=10)
    key = make_key(rate=20, burst=40)
    assert all(limiter.hit(key) is None for _ in range(40))
    wait = limiter.hit(key)
    assert wait is not None and 0 < wait <= 2
    assert limiter.refused == 1


def test_the_sustained_rate_is_the_keys(wall: FakeTime) -> None:
    limiter = KeyRateLimiter(max_keys=10)
    key = make_key(rate=20, burst=40)
    # A client asking 100 times a second for a minute gets 20 a second (and its burst).
    allowed = allowed_over(limiter, key, wall, seconds=60, every=0.01)
    assert 20 * 60 * 0.95 <= allowed <= 20 * 60 + 40


def test_a_refused_client_that_waits_as_told_gets_through(wall: FakeTime) -> None:
    limiter = KeyRateLimiter(max_keys=10)
    key = make_key(rate=1, burst=2)
    while (wait := limiter.hit(key)) is None:
        pass
    for _ in range(20):  # told again if too early, never refused forever
        wall.advance(wait)
        next_wait = limiter.hit(key)
        if next_wait is None:
            break
        wait = next_wait
    else:
        pytest.fail("a client waiting as told never got through")


def test_a_burst_that_is_no_whole_number_of_seconds_of_rate(wall: FakeTime) -> None:
    limiter = KeyRateLimiter(max_keys=10)
    key = make_key(rate=3, burst=4)
    assert [limiter.hit(key) is None for _ in range(5)] == [True] * 4 + [False]
    wall.advance(1)
    allowed = allowed_over(limiter, key, wall, seconds=120, every=0.05)
    assert 3 * 120 * 0.95 <= allowed <= 3 * 120 + 4


@pytest.mark.parametrize(
    ("rate", "burst"), [(20, 40), (3, 4), (0.7, 1), (0.01, 3), (1000, 10), (7.5, 100)]
)
def test_the_items_stand_for_the_rate_within_five_percent(rate: float, burst: int) -> None:
    items = rate_items(rate, burst)
    sustained = items[-1]
    assert sustained.amount / sustained.get_expiry() == pytest.approx(rate, rel=0.05)
    # After a pause, the burst at once (or a second's worth of rate, when that is more).
    assert min(item.amount for item in items) == max(burst, math.ceil(rate))


def test_the_default_limits_are_one_exact_item() -> None:
    (item,) = rate_items(20, 40)
    assert (item.amount, item.get_expiry()) == (40, 2)


def test_impossible_limits_are_refused() -> None:
    with pytest.raises(ValueError):
        rate_items(0, 10)
    with pytest.raises(ValueError):
        rate_items(1, 0)
    with pytest.raises(ValueError):
        KeyRateLimiter(max_keys=0)


def test_keys_are_limited_apart(wall: FakeTime) -> None:
    limiter = KeyRateLimiter(max_keys=10)
    first, second = make_key("a", rate=1, burst=2), make_key("b", rate=1, burst=2)
    assert [limiter.hit(first) is None for _ in range(3)] == [True, True, False]
    assert limiter.hit(second) is None


def test_the_table_keeps_at_most_max_keys_and_the_storage_its_bound(wall: FakeTime) -> None:
    limiter = KeyRateLimiter(max_keys=3)
    keys = [make_key(f"k{i}", rate=3, burst=4) for i in range(50)]
    for round_ in range(30):
        for key in keys:
            limiter.hit(key)
        wall.advance(0.7 * (round_ % 3))
        assert len(limiter) == 3
        assert limiter.counters <= limiter.max_counters + 2
    assert limiter.evicted == 50 * 30 - 3


def test_a_forgotten_key_starts_afresh_with_nothing_left_behind(wall: FakeTime) -> None:
    limiter = KeyRateLimiter(max_keys=1)
    spent, other = make_key("spent", rate=1, burst=2), make_key("other")
    # Counters in three windows of its one-second item: late in one, then two later.
    wall.advance(0.9)
    limiter.hit(spent)
    wall.advance(1.2)
    while limiter.hit(spent) is None:
        pass
    limiter.hit(other)  # evicts "spent" and every counter of it
    assert limiter.counters == 1
    assert limiter.hit(spent) is None


def test_one_key_over_many_windows_keeps_the_storage_bounded(wall: FakeTime) -> None:
    limiter = KeyRateLimiter(max_keys=1)
    key = make_key(rate=3, burst=4)
    for _ in range(2000):
        limiter.hit(key)
        wall.advance(1.5)
        assert limiter.counters <= limiter.max_counters + 2


def test_changed_limits_apply_at_once_and_drop_the_old_counters(wall: FakeTime) -> None:
    limiter = KeyRateLimiter(max_keys=10)
    tight = make_key(rate=1, burst=1)
    assert limiter.hit(tight) is None
    assert limiter.hit(tight) is not None
    loose = make_key(rate=100, burst=200)  # the same key id, its limits raised
    assert limiter.hit(loose) is None
    assert limiter.counters == 1


def test_forget_and_close_leave_no_counters(wall: FakeTime) -> None:
    limiter = KeyRateLimiter(max_keys=10)
    limiter.hit(make_key("a", rate=3, burst=4))
    limiter.hit(make_key("b"))
    limiter.forget("a")
    assert len(limiter) == 1 and limiter.counters == 1
    limiter.close()
    assert len(limiter) == 0 and limiter.counters == 0


def test_hits_start_no_thread(wall: FakeTime) -> None:
    # The library's storage would start an expiry timer thread after a hit; ours never.
    limiter = KeyRateLimiter(max_keys=10)
    threads = threading.active_count()
    for i in range(20):
        limiter.hit(make_key(f"k{i % 3}"))
        wall.advance(0.5)
    assert threading.active_count() == threads


def family_key(
    key_id: str, root: ApiKey, *, rate: float | None = None, burst: int | None = None
) -> ApiKey:
    """A key minted under ``root`` (directly or not), with at most its limits."""
    family, budget = root.family_of_its_keys()
    own = root.limits
    return replace(
        root,
        id=key_id,
        limits=replace(
            own,
            rate=rate if rate is not None else own.rate,
            burst=burst if burst is not None else own.burst,
        ),
        created_by=root.id,
        family_id=family,
        family_budget=budget,
    )


def test_keys_minted_by_a_key_share_its_budget_instead_of_multiplying_it(
    wall: FakeTime,
) -> None:
    limiter = KeyRateLimiter(max_keys=20)
    root = make_key("root", rate=2, burst=2)
    children = [family_key(f"child{n}", root) for n in range(5)]
    grandchild = family_key("grandchild", children[0])
    every_key = [root, *children, grandchild]
    allowed = sum(limiter.hit(key) is None for key in every_key for _ in range(2))
    assert allowed == 2  # the root's burst, not 2 per key
    # Over a minute, the family together gets the root's rate.
    allowed = 0
    for _ in range(600):
        allowed += sum(limiter.hit(key) is None for key in every_key)
        wall.advance(0.1)
    assert allowed <= 2 * 60 + 2


def test_a_minted_key_keeps_its_own_lower_limits_inside_the_family(wall: FakeTime) -> None:
    limiter = KeyRateLimiter(max_keys=10)
    root = make_key("root", rate=20, burst=40)
    slow = family_key("slow", root, rate=1, burst=1)
    assert [limiter.hit(slow) is None for _ in range(3)] == [True, False, False]
    assert limiter.hit(root) is None


def test_a_refusal_by_one_budget_takes_nothing_from_the_other(wall: FakeTime) -> None:
    limiter = KeyRateLimiter(max_keys=10)
    root = make_key("root", rate=1, burst=3)
    slow = family_key("slow", root, rate=1, burst=1)
    # Refused by its own limits: the family's burst is not spent by the refusals.
    assert [limiter.hit(slow) is None for _ in range(5)] == [True] + [False] * 4
    assert [limiter.hit(root) is None for _ in range(3)] == [True, True, False]
    # Refused by the family's: nothing is counted against the key's own limits.
    other = family_key("other", root, rate=1, burst=1)
    counters = limiter.counters
    assert limiter.hit(other) is not None
    assert limiter.counters == counters
