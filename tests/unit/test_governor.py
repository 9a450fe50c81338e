"""The memory governor, stepped with synthetic samples, a fake clock and stub gc/trim."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from chatkeep.errors import Overloaded
from chatkeep.memory.budget import MemoryBudget
from chatkeep.memory.governor import MemoryGovernor, Reclaimable, TierThresholds
from chatkeep.memory.sampler import MemoryReading, MemorySample, MemorySampler
from chatkeep.memory.trim import load_malloc_trim

BUDGET = 1_000_000


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Journal:
    """Records every action, in order, across structures, gc and trim."""

    def __init__(self, clock: Clock, gc_seconds: float = 0.0) -> None:
        self.calls: list[str] = []
        self.clock = clock
        self.gc_seconds = gc_seconds

    def gc(self) -> int:
        self.calls.append("gc")
        self.clock.now += self.gc_seconds
        return 0

    def trim(self, pad: int) -> int:
        self.calls.append(f"trim({pad})")
        return 1


class Structure:
    """A bounded structure that frees exactly the share it is asked for."""

    def __init__(self, name: str, nbytes: int, journal: Journal) -> None:
        self._name = name
        self._nbytes = nbytes
        self.journal = journal
        self.asked: list[float] = []

    @property
    def name(self) -> str:
        return self._name

    def nbytes(self) -> int:
        return self._nbytes

    def reclaim(self, fraction: float) -> int:
        self.asked.append(fraction)
        self.journal.calls.append(f"reclaim:{self._name}")
        freed = int(self._nbytes * fraction)
        self._nbytes -= freed
        return freed


class BrokenStructure(Structure):
    def reclaim(self, fraction: float) -> int:
        self.journal.calls.append(f"reclaim:{self.name}")
        raise RuntimeError("cannot reclaim")

    def nbytes(self) -> int:
        raise RuntimeError("cannot measure")


def no_memory_read(want_uss: bool) -> MemoryReading:
    raise AssertionError("these tests feed samples directly")


def make(
    *, gc_seconds: float = 0.0, **kwargs: Any
) -> tuple[MemoryGovernor, Journal, Clock, MemorySampler]:
    clock = Clock()
    journal = Journal(clock, gc_seconds)
    sampler = MemorySampler(read=no_memory_read, clock=clock)
    kwargs.setdefault("malloc_trim", journal.trim)
    governor = MemoryGovernor(
        MemoryBudget(BUDGET, "configured"), sampler, clock=clock, gc_collect=journal.gc, **kwargs
    )
    return governor, journal, clock, sampler


def at(fraction: float, requests: int = 0) -> MemorySample:
    return MemorySample(0.0, requests, round(fraction * BUDGET), None)


def test_starts_ok_and_accepting() -> None:
    governor, *_ = make()
    assert governor.tier == "ok"
    assert not governor.shedding
    assert governor.accepting_streams
    assert governor.fraction is None
    governor.ensure_generation_allowed()
    governor.ensure_stream_allowed()


@pytest.mark.parametrize(
    ("fraction", "tier", "shedding", "streams"),
    [
        (0.59, "ok", False, True),
        (0.60, "warn", False, True),
        (0.70, "evict", False, True),
        (0.85, "shed", True, True),
        (0.95, "critical", True, False),
        (1.30, "critical", True, False),
    ],
)
def test_each_tier_is_entered_at_its_threshold(
    fraction: float, tier: str, shedding: bool, streams: bool
) -> None:
    governor, *_ = make()
    assert governor.evaluate(at(fraction)) == tier
    assert governor.tier == tier
    assert governor.shedding is shedding
    assert governor.accepting_streams is streams


@pytest.mark.parametrize(
    ("tier_at", "stays_at", "leaves_at", "below"),
    [
        (0.60, 0.56, 0.54, "ok"),
        (0.70, 0.66, 0.64, "warn"),
        (0.85, 0.81, 0.79, "evict"),
        (0.95, 0.91, 0.89, "shed"),
    ],
)
def test_each_tier_is_left_only_below_threshold_minus_hysteresis(
    tier_at: float, stays_at: float, leaves_at: float, below: str
) -> None:
    governor, *_ = make()
    tier = governor.evaluate(at(tier_at))
    assert governor.evaluate(at(tier_at - 0.01)) == tier
    assert governor.evaluate(at(stays_at)) == tier
    assert governor.evaluate(at(leaves_at)) == below


def test_a_big_drop_leaves_several_tiers_at_once() -> None:
    governor, *_ = make()
    governor.evaluate(at(0.97))
    assert governor.evaluate(at(0.58)) == "warn"  # still within warn's hysteresis
    governor.evaluate(at(0.97))
    assert governor.evaluate(at(0.10)) == "ok"


def test_custom_thresholds_and_hysteresis() -> None:
    thresholds = TierThresholds(warn=0.5, evict=0.6, shed=0.7, critical=0.8, hysteresis=0.1)
    governor, *_ = make(thresholds=thresholds)
    assert governor.evaluate(at(0.61)) == "evict"
    assert governor.evaluate(at(0.51)) == "evict"
    assert governor.evaluate(at(0.49)) == "warn"


def test_warn_logs_once_per_entry_and_counts(caplog: pytest.LogCaptureFixture) -> None:
    governor, journal, *_ = make()
    with caplog.at_level(logging.INFO, logger="chatkeep.memory.governor"):
        for _ in range(5):
            governor.evaluate(at(0.62))
        governor.evaluate(at(0.40))
        governor.evaluate(at(0.65))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage().split(":")[0] for r in warnings] == [
        "memory tier ok -> warn",
        "memory tier ok -> warn",
    ]
    assert governor.actions["warn"] == 2
    assert journal.calls == []  # warn only tells


def test_jumping_tiers_counts_each_tier_crossed() -> None:
    governor, *_ = make()
    governor.evaluate(at(0.99))
    actions = governor.actions
    assert (actions["warn"], actions["shed"], actions["critical"]) == (1, 1, 1)
    governor.evaluate(at(0.96))
    assert governor.actions["critical"] == 1  # staying is not entering


def test_evict_reclaims_a_bounded_share_then_collects_then_trims() -> None:
    governor, journal, *_ = make(evict_share=0.25)
    cache = Structure("response_cache", 4000, journal)
    streams = Structure("stream_buffers", 1000, journal)
    governor.register(cache)
    governor.register(streams)
    governor.evaluate(at(0.72))
    assert journal.calls == [
        "reclaim:response_cache",
        "reclaim:stream_buffers",
        "gc",
        "trim(0)",
    ]
    assert cache.asked == [0.25]
    assert (cache.nbytes(), streams.nbytes()) == (3000, 750)
    snapshot = governor.snapshot()
    assert snapshot["reclaimed_bytes"] == 1250
    assert snapshot["structures"] == [
        {"name": "response_cache", "nbytes": 3000},
        {"name": "stream_buffers", "nbytes": 750},
    ]
    actions = governor.actions
    assert (actions["evict"], actions["gc"], actions["trim"]) == (1, 1, 1)


def test_rounds_under_pressure_are_bounded_and_spaced() -> None:
    governor, journal, clock, _ = make(evict_share=0.5, evict_interval_seconds=2.0)
    cache = Structure("cache", 1024, journal)
    governor.register(cache)
    for step in range(7):
        clock.now = step * 1.0  # a sample every second, a round every two
        governor.evaluate(at(0.90))
    assert cache.asked == [0.5, 0.5, 0.5, 0.5]
    assert cache.nbytes() == 64
    assert governor.actions["evict"] == 4


def test_each_round_takes_only_its_share() -> None:
    governor, journal, *_ = make(evict_share=0.5, evict_interval_seconds=0.0)
    cache = Structure("cache", 1024, journal)
    governor.register(cache)
    for _ in range(3):
        governor.evaluate(at(0.90))
    assert cache.asked == [0.5, 0.5, 0.5]
    assert cache.nbytes() == 128
    governor.evaluate(at(0.50))
    assert len(cache.asked) == 3  # back to ok: nothing more is taken


def test_no_eviction_below_the_evict_tier() -> None:
    governor, journal, *_ = make()
    governor.register(Structure("cache", 1000, journal))
    governor.evaluate(at(0.69))
    assert journal.calls == []
    assert governor.actions["evict"] == 0


def test_a_failing_structure_does_not_stop_the_others(caplog: pytest.LogCaptureFixture) -> None:
    governor, journal, *_ = make()
    governor.register(BrokenStructure("broken", 100, journal))
    good = Structure("good", 100, journal)
    governor.register(good)
    with caplog.at_level(logging.ERROR, logger="chatkeep.memory.governor"):
        governor.evaluate(at(0.75))
        structures = governor.snapshot()["structures"]
    assert journal.calls[:2] == ["reclaim:broken", "reclaim:good"]
    assert good.nbytes() == 75
    assert governor.actions["reclaim_error"] == 1
    assert structures == [{"name": "broken", "nbytes": None}, {"name": "good", "nbytes": 75}]
    assert "reclaiming memory from broken failed" in caplog.text


def test_gc_is_throttled_to_a_share_of_wall_time() -> None:
    # Each collection takes 0.1 s; at a 2% share the next may start 4.9 s after it ends.
    governor, journal, clock, _ = make(
        gc_seconds=0.1, gc_time_share=0.02, evict_interval_seconds=0.0
    )
    governor.evaluate(at(0.75))
    assert journal.calls.count("gc") == 1
    clock.now = 3.0
    governor.evaluate(at(0.75))
    clock.now = 4.99
    governor.evaluate(at(0.75))
    assert journal.calls.count("gc") == 1
    clock.now = 5.0
    governor.evaluate(at(0.75))
    assert journal.calls.count("gc") == 2
    actions = governor.actions
    assert (actions["gc"], actions["gc_throttled"], actions["trim"]) == (2, 2, 2)
    gc_seconds = governor.snapshot()["gc_seconds"]
    assert isinstance(gc_seconds, float)
    assert gc_seconds == pytest.approx(0.2)


def test_gc_stays_within_its_share_over_a_long_pressure_spell() -> None:
    governor, _, clock, _ = make(gc_seconds=0.05, gc_time_share=0.02, evict_interval_seconds=0.0)
    for step in range(2000):
        clock.now = step * 0.5
        governor.evaluate(at(0.9))
    gc_seconds = governor.snapshot()["gc_seconds"]
    assert isinstance(gc_seconds, float)
    # One collection of slack for the last, not yet paid for, interval.
    assert gc_seconds <= 0.02 * clock.now + 0.05


def test_no_trim_where_malloc_trim_is_missing() -> None:
    governor, journal, *_ = make(malloc_trim=None)
    governor.evaluate(at(0.75))
    assert journal.calls == ["gc"]
    assert governor.actions["trim"] == 0
    assert governor.snapshot()["malloc_trim"] is False


def test_a_failing_trim_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    def broken_trim(pad: int) -> int:
        raise OSError("nope")

    governor, journal, *_ = make(malloc_trim=broken_trim)
    with caplog.at_level(logging.ERROR, logger="chatkeep.memory.governor"):
        governor.evaluate(at(0.75))
    assert journal.calls == ["gc"]
    assert governor.actions["trim"] == 0
    assert "malloc_trim failed" in caplog.text


class FakeLibc:
    def __init__(self) -> None:
        self.malloc_trim = FakeTrim()


class FakeTrim:
    argtypes: object = None
    restype: object = None

    def __init__(self) -> None:
        self.pads: list[int] = []

    def __call__(self, pad: int) -> int:
        self.pads.append(pad)
        return 1


def test_malloc_trim_is_loaded_on_glibc_and_called_with_zero() -> None:
    libc = FakeLibc()
    loaded: list[str] = []

    def load(name: str) -> FakeLibc:
        loaded.append(name)
        return libc

    trim = load_malloc_trim(platform_name="linux", libc_name="glibc", load=load)
    assert trim is libc.malloc_trim
    assert loaded == ["libc.so.6"]
    governor, *_ = make(malloc_trim=trim)
    governor.evaluate(at(0.8))
    assert libc.malloc_trim.pads == [0]


@pytest.mark.parametrize(("platform_name", "libc_name"), [("darwin", ""), ("linux", "musl")])
def test_malloc_trim_is_absent_off_glibc(platform_name: str, libc_name: str) -> None:
    def load(name: str) -> FakeLibc:
        raise AssertionError("must not load a libc")

    assert load_malloc_trim(platform_name=platform_name, libc_name=libc_name, load=load) is None


def test_malloc_trim_load_failure_means_absent() -> None:
    def load(name: str) -> object:
        raise OSError("not found")

    assert load_malloc_trim(platform_name="linux", libc_name="glibc", load=load) is None


def test_shed_and_critical_refuse_work_with_retry_after() -> None:
    governor, *_ = make(retry_after_seconds=7.0)
    governor.evaluate(at(0.86))
    with pytest.raises(Overloaded) as refused:
        governor.ensure_generation_allowed()
    assert refused.value.retry_after == 7.0
    governor.ensure_stream_allowed()
    governor.evaluate(at(0.96))
    with pytest.raises(Overloaded):
        governor.ensure_stream_allowed()
    governor.evaluate(at(0.30))
    governor.ensure_generation_allowed()
    governor.ensure_stream_allowed()


def test_registration_is_by_unique_name() -> None:
    governor, journal, *_ = make()
    cache = Structure("cache", 100, journal)
    assert isinstance(cache, Reclaimable)
    governor.register(cache)
    with pytest.raises(ValueError, match="already registered"):
        governor.register(Structure("cache", 5, journal))
    governor.unregister("cache")
    governor.unregister("never-registered")
    governor.evaluate(at(0.75))
    assert cache.asked == []


def test_samples_from_the_sampler_drive_the_governor() -> None:
    readings = iter([500_000, 720_000, 100_000])
    clock = Clock()
    sampler = MemorySampler(read=lambda want_uss: MemoryReading(next(readings)), clock=clock)
    governor = MemoryGovernor(BUDGET, sampler, clock=clock, gc_collect=lambda: 0, malloc_trim=None)
    assert [sampler.sample() and governor.tier for _ in range(3)] == ["ok", "evict", "ok"]
    assert governor.budget.source == "given"


def test_snapshot_is_json_and_carries_the_trend() -> None:
    clock = Clock()
    rss = {"now": 300_000}

    def read(want_uss: bool) -> MemoryReading:
        return MemoryReading(rss["now"], rss["now"] // 2 if want_uss else None)

    sampler = MemorySampler(read=read, clock=clock, window=256, uss_every=10)
    # A budget of 1 MB: growth is judged without the resolution of a real process's RSS.
    governor = MemoryGovernor(
        BUDGET,
        sampler,
        clock=clock,
        gc_collect=lambda: 0,
        malloc_trim=None,
        trend_min_growth_bytes=0,
    )
    for _ in range(200):
        for _ in range(10):
            sampler.record_request()
            rss["now"] += 300  # a 300-byte-per-request leak
        clock.now += 1.0
        sampler.sample()
    snapshot = governor.snapshot()
    json.dumps(snapshot)
    assert snapshot["tier"] == "shed"
    assert snapshot["rss"] == 300_000 + 2000 * 300
    assert snapshot["fraction"] == pytest.approx(0.9)
    assert snapshot["requests"] == 2000
    assert snapshot["uss"] == (300_000 + 1910 * 300) // 2
    assert snapshot["window"] == {"samples": 200, "size": 256}
    trend = snapshot["trend"]
    assert isinstance(trend, dict)
    assert trend["verdict"] == "growing"
    assert trend["slope_per_request"] == pytest.approx(300)
    assert trend["slope_per_hour"] == pytest.approx(300 * 10 * 3600)
    assert governor.trend() is governor.trend()  # cached until the next sample
    assert set(snapshot) >= {"budget", "thresholds", "actions", "shedding", "accepting_streams"}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"warn": 0.7, "evict": 0.6},
        {"critical": 0.8},
        {"hysteresis": -0.1},
        {"hysteresis": 0.6},
        {"warn": 0.0},
    ],
)
def test_bad_thresholds_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        TierThresholds(**kwargs)


@pytest.mark.parametrize(
    "kwargs", [{"evict_share": 0.0}, {"gc_time_share": 1.0}, {"evict_interval_seconds": -1.0}]
)
def test_bad_governor_options_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        make(**kwargs)


def test_a_cache_filling_to_its_bound_is_not_a_leak() -> None:
    """RSS rises with a registered cache's bytes: the verdict (on the rest) stays stable."""
    from chatkeep.memory.sampler import MemoryReading, MemorySampler

    class FillingCache:
        name = "filling"
        held = 0

        def nbytes(self) -> int:
            return self.held

        def reclaim(self, fraction: float) -> int:
            return 0

    cache = FillingCache()
    base = 50_000_000
    sampler = MemorySampler(read=lambda want_uss: MemoryReading(base + cache.held), window=512)
    # 400 B/request over 1 600 requests judged: below an RSS step, so judged without one.
    governor = MemoryGovernor(10**10, sampler, malloc_trim=None, trend_min_growth_bytes=0)
    governor.register(cache)
    for n in range(400):
        cache.held = n * 4096  # grows 4 KiB a request, as a leak would
        for _ in range(10):
            sampler.record_request()
        sampler.sample()
    assert governor.rss_trend().verdict == "growing"
    assert governor.trend().verdict == "stable"


def test_warm_up_requests_never_enter_the_verdict() -> None:
    from chatkeep.memory.sampler import MemoryReading, MemorySampler

    rss = [50_000_000]
    sampler = MemorySampler(read=lambda want_uss: MemoryReading(rss[0]), window=512)
    governor = MemoryGovernor(10**10, sampler, malloc_trim=None, trend_warmup_requests=2000)
    for n in range(400):
        if n < 200:
            rss[0] += 40_000  # imports and allocator warming up: steep, then flat
        for _ in range(10):
            sampler.record_request()
        sampler.sample()
    assert governor.trend().verdict == "stable"


class CreateAndSendServer:
    """A server under the create-and-send workload, as the governor sees it.

    Every request adds ``held`` bytes to a registered cache that reports them exactly (new
    conversations fill the working set, far from its bound), and ``leak`` bytes nothing
    reports. RSS follows both, but only in whole 1 MiB steps, as CPython maps its arenas;
    SQLite's page cache fills over the first requests and is reported too.
    """

    ARENA = 1024 * 1024

    def __init__(self, leak: int, held: int = 1200) -> None:
        self.leak = leak
        self.held = held
        self.requests = 0
        self.sampler = MemorySampler(read=self.read, window=1024, every_requests=100)
        # The defaults chatkeep serves with: 1000 warm-up requests, the governor's own
        # least growth.
        self.governor = MemoryGovernor(10**10, self.sampler, trend_warmup_requests=1000)
        self.cache = _Reported("working_set", lambda: self.requests * self.held)
        self.sqlite = _Reported("sqlite", lambda: min(2_400_000, 400_000 + 700 * self.requests))
        self.governor.register(self.cache)
        self.governor.register(self.sqlite)

    def read(self, want_uss: bool) -> MemoryReading:
        true = 60 * self.ARENA + self.cache.nbytes() + self.sqlite.nbytes()
        true += self.leak * self.requests
        return MemoryReading(-(-true // self.ARENA) * self.ARENA)

    def run_to(self, requests: int) -> str:
        while self.requests < requests:
            self.requests += 1
            self.sampler.record_request()
            if self.requests % self.sampler.every_requests == 0:
                self.sampler.sample()
        return self.governor.trend().verdict


class _Reported:
    def __init__(self, name: str, nbytes: Any) -> None:
        self.name = name
        self._nbytes = nbytes

    def nbytes(self) -> int:
        return int(self._nbytes())

    def reclaim(self, fraction: float) -> int:
        return 0


CHECKPOINTS = [3000, 6000, 9000, 12000, 15000, 18000, 20000]


@pytest.mark.parametrize("held", [100, 300, 1200])
def test_no_leak_reads_stable_at_every_checkpoint_although_rss_moves_in_steps(held: int) -> None:
    # Between two arenas the residual falls by what the cache reports and then jumps back:
    # a sawtooth that must not read as a trend either way.
    server = CreateAndSendServer(leak=0, held=held)
    verdicts = {n: server.run_to(n) for n in CHECKPOINTS}
    assert set(verdicts.values()) == {"stable"}, verdicts


def test_a_4kib_leak_reads_growing_within_3000_requests() -> None:
    server = CreateAndSendServer(leak=4096)
    assert server.run_to(3000) == "growing"
    assert all(server.run_to(n) == "growing" for n in CHECKPOINTS[1:])


@pytest.mark.parametrize("held", [300, 1200])
def test_a_512_byte_leak_reads_growing_within_20000_requests(held: int) -> None:
    server = CreateAndSendServer(leak=512, held=held)
    verdicts = {n: server.run_to(n) for n in CHECKPOINTS}
    assert verdicts[20000] == "growing", verdicts
    assert "shrinking" not in verdicts.values(), verdicts
