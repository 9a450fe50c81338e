"""ByteLRU: byte accounting, LRU order, TTL on a fake clock, reclaiming, counters."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from chatkeep.cache.byte_lru import ByteLRU
from chatkeep.memory.governor import Reclaimable


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float) -> None:
        self.now += seconds


def byte_cache(
    maxsize: int = 10,
    *,
    ttl: float | None = None,
    timer: Callable[[], float] = time.monotonic,
    name: str = "byte_lru",
) -> tuple[ByteLRU[str, bytes], list[tuple[str, bytes]]]:
    """A cache measuring bytes values by length, and the list its evictions go to."""
    evicted: list[tuple[str, bytes]] = []
    cache: ByteLRU[str, bytes] = ByteLRU(
        maxsize,
        getsizeof=len,
        ttl=ttl,
        timer=timer,
        name=name,
        on_evict=lambda key, value: evicted.append((key, value)),
    )
    return cache, evicted


def test_sizes_add_up_and_the_least_recently_used_goes_first() -> None:
    cache, evicted = byte_cache(10)
    cache["a"] = b"aaa"
    cache["b"] = b"bbb"
    cache["c"] = b"ccc"
    assert cache.currsize == 9
    assert cache["a"] == b"aaa"  # now "b" is the least recently used
    cache["d"] = b"dd"
    assert evicted == [("b", b"bbb")]
    assert list(cache) == ["c", "a", "d"]
    assert cache.currsize == 8 <= cache.maxsize
    assert cache.evictions == 1
    assert cache.evicted_bytes == 3


def test_an_insert_evicts_as_many_as_it_takes() -> None:
    cache, evicted = byte_cache(10)
    for key in "abcde":
        cache[key] = b"xx"
    cache["big"] = b"y" * 9
    assert [key for key, _ in evicted] == ["a", "b", "c", "d", "e"]
    assert list(cache) == ["big"]
    assert cache.currsize == 9


def test_a_value_exactly_maxsize_fits() -> None:
    cache, _ = byte_cache(10)
    cache["a"] = b"x" * 10
    assert cache.currsize == 10


def test_peek_does_not_refresh_recency_or_count() -> None:
    cache, evicted = byte_cache(6)
    cache["a"] = b"aaa"
    cache["b"] = b"bbb"
    assert cache.peek("a") == b"aaa"
    assert cache.peek("missing") is None
    assert cache.peek("missing", b"") == b""
    cache["c"] = b"ccc"
    assert evicted == [("a", b"aaa")]
    assert (cache.hits, cache.misses) == (0, 0)


def test_replacing_a_value_recounts_its_size_and_is_not_an_eviction() -> None:
    cache, evicted = byte_cache(10)
    cache["a"] = b"aaaaa"
    cache["a"] = b"a"
    assert cache.currsize == 1
    assert len(cache) == 1
    assert evicted == []


def test_a_value_larger_than_maxsize_is_refused_and_replaces_nothing() -> None:
    cache, evicted = byte_cache(10)
    cache["a"] = b"aaa"
    cache["b"] = b"bbb"
    with pytest.raises(ValueError, match="value too large"):
        cache["a"] = b"z" * 11
    # The old value is gone (the caller meant to replace it), nothing else was evicted.
    assert "a" not in cache
    assert list(cache) == ["b"]
    assert cache.currsize == 3
    assert evicted == []


def test_negative_sizes_and_bounds_are_refused() -> None:
    with pytest.raises(ValueError):
        ByteLRU[str, bytes](-1, getsizeof=len)
    cache: ByteLRU[str, int] = ByteLRU(10, getsizeof=lambda value: value)
    with pytest.raises(ValueError, match="negative"):
        cache["a"] = -1


def test_hits_and_misses_are_counted() -> None:
    cache, _ = byte_cache(10)
    cache["a"] = b"a"
    assert cache.get("a") == b"a"
    assert cache.get("nope") is None
    with pytest.raises(KeyError):
        cache["nope"]
    assert (cache.hits, cache.misses) == (1, 2)


def test_deleting_popping_and_clearing_keep_accounting_and_are_not_evictions() -> None:
    cache, evicted = byte_cache(10)
    cache["a"] = b"aa"
    cache["b"] = b"bbb"
    cache["c"] = b"c"
    del cache["a"]
    assert cache.currsize == 4
    assert cache.pop("b") == b"bbb"
    assert cache.pop("b", None) is None
    with pytest.raises(KeyError):
        cache.pop("b")
    assert cache.currsize == 1
    cache.clear()
    assert cache.currsize == 0
    assert len(cache) == 0
    assert evicted == []
    assert cache.evictions == 0
    assert (cache.hits, cache.misses) == (0, 0)


def test_popitem_evicts_the_least_recently_used_and_fails_clearly_when_empty() -> None:
    cache, evicted = byte_cache(10)
    cache["a"] = b"a"
    cache["b"] = b"b"
    assert cache.popitem() == ("a", b"a")
    assert evicted == [("a", b"a")]
    cache.popitem()
    with pytest.raises(KeyError, match="empty"):
        cache.popitem()


def test_an_expired_item_is_a_miss_and_is_dropped() -> None:
    clock = FakeClock()
    cache, evicted = byte_cache(10, ttl=5.0, timer=clock)
    cache["a"] = b"aaa"
    clock.tick(4.9)
    assert cache["a"] == b"aaa"
    clock.tick(0.1)
    assert "a" not in cache
    assert cache.get("a") is None
    assert cache.currsize == 0
    assert len(cache) == 0
    assert evicted == [("a", b"aaa")]
    assert (cache.hits, cache.misses) == (1, 1)
    assert (cache.expirations, cache.expired_bytes) == (1, 3)
    assert cache.evictions == 0


def test_reading_does_not_extend_a_ttl() -> None:
    clock = FakeClock()
    cache, _ = byte_cache(10, ttl=5.0, timer=clock)
    cache["a"] = b"a"
    for _ in range(4):
        clock.tick(1.0)
        assert cache["a"] == b"a"
    clock.tick(1.0)
    assert cache.get("a") is None


def test_per_item_ttl_overrides_the_default() -> None:
    clock = FakeClock()
    cache, _ = byte_cache(10, ttl=5.0, timer=clock)
    cache.set("short", b"s", ttl=1.0)
    cache.set("forever", b"f", ttl=None)
    cache.set("default", b"d")
    clock.tick(2.0)
    assert cache.peek("short") is None
    clock.tick(1000.0)
    assert cache.peek("default") is None
    assert cache.peek("forever") == b"f"


def test_expire_drops_every_expired_item_and_returns_the_bytes() -> None:
    clock = FakeClock()
    cache, evicted = byte_cache(100, ttl=10.0, timer=clock)
    cache["old1"] = b"1" * 5
    cache["old2"] = b"2" * 7
    clock.tick(5.0)
    cache["new"] = b"n" * 11
    clock.tick(5.0)
    assert len(cache) == 3  # lazily: nothing dropped until asked
    assert cache.expire() == 12
    assert list(cache) == ["new"]
    assert cache.currsize == 11
    assert sorted(key for key, _ in evicted) == ["old1", "old2"]
    assert cache.expire() == 0


def test_reclaim_takes_expired_items_first_then_the_least_recently_used() -> None:
    clock = FakeClock()
    cache, evicted = byte_cache(100, ttl=10.0, timer=clock)
    cache["lru"] = b"l" * 10
    cache.set("expiring", b"e" * 10, ttl=1.0)
    cache["mru"] = b"m" * 10
    cache["newest"] = b"n" * 10
    clock.tick(2.0)
    # 40 bytes held; a quarter is 10, which the expired item covers on its own.
    assert cache.reclaim(0.25) == 10
    assert [key for key, _ in evicted] == ["expiring"]
    assert list(cache) == ["lru", "mru", "newest"]
    # Now 30 held; half is 15, so two least recently used items go.
    assert cache.reclaim(0.5) == 20
    assert [key for key, _ in evicted] == ["expiring", "lru", "mru"]
    assert cache.currsize == 10
    assert (cache.evictions, cache.evicted_bytes) == (2, 20)
    assert (cache.expirations, cache.expired_bytes) == (1, 10)


def test_reclaim_frees_at_least_the_fraction_and_not_much_more() -> None:
    cache: ByteLRU[int, int] = ByteLRU(10_000, getsizeof=lambda value: value)
    for key in range(100):
        cache[key] = 50
    held = cache.currsize
    freed = cache.reclaim(0.25)
    assert freed >= 0.25 * held
    assert freed < 0.25 * held + 50  # stops at the first item that reaches the share
    assert cache.currsize == held - freed
    assert next(iter(cache)) == 25  # the oldest 25 went


def test_reclaim_edges() -> None:
    cache, _ = byte_cache(10)
    assert cache.reclaim(0.5) == 0  # empty
    cache["a"] = b"aaa"
    assert cache.reclaim(0.0) == 0
    assert cache.reclaim(1.0) == 3
    assert cache.currsize == 0
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError):
            cache.reclaim(bad)


def test_it_is_a_reclaimable_structure_with_stats() -> None:
    cache, _ = byte_cache(10, name="test_cache")
    assert isinstance(cache, Reclaimable)
    cache["a"] = b"aaaa"
    cache.get("a")
    cache.get("b")
    assert cache.name == "test_cache"
    assert cache.nbytes() == 4
    assert cache.stats() == {
        "maxsize": 10,
        "currsize": 4,
        "items": 1,
        "hits": 1,
        "misses": 1,
        "evictions": 0,
        "evicted_bytes": 0,
        "expirations": 0,
        "expired_bytes": 0,
    }


def test_bound_holds_under_a_stream_of_mixed_sizes() -> None:
    cache: ByteLRU[int, bytes] = ByteLRU(1000, getsizeof=len)
    for key in range(5000):
        cache[key] = b"x" * (key % 97 + 1)
        assert cache.currsize <= cache.maxsize
    assert cache.currsize == sum(len(value) for value in cache.values())
