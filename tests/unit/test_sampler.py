"""The memory sampler, driven by fake readings, a fake clock and manual ticks."""

from __future__ import annotations

import asyncio
import logging

import pytest

from chatkeep.memory.sampler import (
    MemoryReading,
    MemorySample,
    MemorySampler,
    ProcessMemoryReader,
    series,
)

# Waits that must not run out; they only stop a broken test from hanging.
MUST_NOT_FIRE = 5.0


class FakeMemory:
    """RSS grows by one KiB per read; USS is half of RSS when asked for."""

    def __init__(self) -> None:
        self.rss = 100 * 1024 * 1024
        self.uss_asked: list[bool] = []

    def __call__(self, want_uss: bool) -> MemoryReading:
        self.uss_asked.append(want_uss)
        self.rss += 1024
        return MemoryReading(self.rss, self.rss // 2 if want_uss else None)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


class ManualSleep:
    """A sleep that returns only when the test ticks it."""

    def __init__(self) -> None:
        self.asked: list[float] = []
        self._ticks: asyncio.Queue[None] = asyncio.Queue()

    async def __call__(self, seconds: float) -> None:
        self.asked.append(seconds)
        await self._ticks.get()

    def tick(self) -> None:
        self._ticks.put_nowait(None)


class Collector:
    """A listener that lets a test wait for the n-th sample."""

    def __init__(self) -> None:
        self.samples: list[MemorySample] = []
        self._changed = asyncio.Event()

    def __call__(self, sample: MemorySample) -> None:
        self.samples.append(sample)
        self._changed.set()

    async def until(self, count: int) -> None:
        async def wait() -> None:
            while len(self.samples) < count:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(wait(), MUST_NOT_FIRE)


def make_sampler(**kwargs: object) -> tuple[MemorySampler, FakeMemory, ManualSleep, Collector]:
    memory, sleep, collector = FakeMemory(), ManualSleep(), Collector()
    options: dict[str, object] = {
        "interval_seconds": 5.0,
        "every_requests": 10,
        "window": 16,
        "uss_every": 4,
        "read": memory,
        "clock": FakeClock(),
        "sleep": sleep,
    }
    options.update(kwargs)
    sampler = MemorySampler(**options)  # type: ignore[arg-type]
    sampler.subscribe(collector)
    return sampler, memory, sleep, collector


def test_sample_records_time_requests_and_memory() -> None:
    sampler, memory, _, collector = make_sampler()
    for _ in range(3):
        sampler.record_request()
    sample = sampler.sample()
    assert sample == MemorySample(1001.0, 3, memory.rss, memory.rss // 2)
    assert sampler.latest == sample
    assert collector.samples == [sample]
    assert sampler.requests == 3


def test_window_is_bounded() -> None:
    sampler, *_ = make_sampler(window=16)
    for _ in range(40):
        sampler.sample()
    samples = sampler.samples
    assert len(samples) == 16
    assert sampler.window_size == 16
    assert samples[0].time == 1025.0  # the 25th of 40


def test_uss_is_read_only_every_n_samples() -> None:
    sampler, memory, _, _ = make_sampler(uss_every=4)
    samples = [sampler.sample() for _ in range(9)]
    assert memory.uss_asked == [True, False, False, False] * 2 + [True]
    assert [s.uss is not None for s in samples] == memory.uss_asked
    assert sampler.last_uss == samples[8].uss


def test_uss_never_read_when_disabled() -> None:
    sampler, memory, _, _ = make_sampler(uss_every=0)
    for _ in range(5):
        sampler.sample()
    assert not any(memory.uss_asked)
    assert sampler.last_uss is None


async def test_start_samples_at_once_then_every_interval() -> None:
    sampler, _, sleep, collector = make_sampler()
    await sampler.start()
    try:
        assert len(collector.samples) == 1
        sleep.tick()
        await collector.until(2)
        sleep.tick()
        await collector.until(3)
        assert sleep.asked[:2] == [5.0, 5.0]
    finally:
        await sampler.stop()


async def test_every_n_requests_wakes_the_sampler() -> None:
    sampler, _, _, collector = make_sampler(every_requests=10)
    await sampler.start()
    try:
        for _ in range(9):
            sampler.record_request()
        await asyncio.sleep(0)  # let the task run: nine requests must not sample
        assert len(collector.samples) == 1
        sampler.record_request()
        await collector.until(2)
        assert collector.samples[-1].requests == 10
        for _ in range(25):
            sampler.record_request()
        await collector.until(3)
        assert collector.samples[-1].requests == 35
    finally:
        await sampler.stop()


async def test_request_sampling_can_be_disabled() -> None:
    sampler, _, _, collector = make_sampler(every_requests=0)
    await sampler.start()
    try:
        for _ in range(1000):
            sampler.record_request()
        await asyncio.sleep(0)
        assert len(collector.samples) == 1
    finally:
        await sampler.stop()


async def test_stop_is_safe_twice_and_without_start() -> None:
    sampler, *_ = make_sampler()
    await sampler.stop()
    await sampler.start()
    assert sampler.running
    await sampler.stop()
    await sampler.stop()
    assert not sampler.running


async def test_start_twice_is_an_error_and_restart_works() -> None:
    sampler, _, sleep, collector = make_sampler()
    await sampler.start()
    try:
        with pytest.raises(RuntimeError, match="already running"):
            await sampler.start()
    finally:
        await sampler.stop()
    await sampler.start()
    try:
        sleep.tick()
        await collector.until(3)
    finally:
        await sampler.stop()


async def test_a_failing_listener_does_not_stop_sampling(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sampler, _, sleep, collector = make_sampler()
    failures = {"left": 2}

    def flaky(sample: MemorySample) -> None:
        if failures["left"]:
            failures["left"] -= 1
            raise RuntimeError("listener broke")

    sampler.subscribe(flaky)
    with caplog.at_level(logging.ERROR, logger="chatkeep.memory.sampler"):
        await sampler.start()
        try:
            sleep.tick()
            await collector.until(2)
            sleep.tick()
            await collector.until(3)
        finally:
            await sampler.stop()
    assert caplog.text.count("memory sample failed") == 2
    assert len(sampler.samples) == 3


async def test_a_failing_reading_is_logged_and_skipped(caplog: pytest.LogCaptureFixture) -> None:
    memory = FakeMemory()
    broken = {"now": True}

    def read(want_uss: bool) -> MemoryReading:
        if broken["now"]:
            raise OSError("no /proc")
        return memory(want_uss)

    sampler, _, sleep, collector = make_sampler(read=read)
    with caplog.at_level(logging.ERROR, logger="chatkeep.memory.sampler"):
        await sampler.start()
        try:
            assert sampler.samples == []
            broken["now"] = False
            sleep.tick()
            await collector.until(1)
        finally:
            await sampler.stop()
    assert "memory sample failed" in caplog.text
    assert len(sampler.samples) == 1


def test_series_feeds_the_trend_analysis() -> None:
    sampler, *_ = make_sampler()
    sampler.record_request()
    first = sampler.sample()
    second = sampler.sample()
    assert series([first, second]) == ([1, 1], [first.rss, second.rss], [1001.0, 1002.0])
    assert first.as_dict() == {
        "time": 1001.0,
        "requests": 1,
        "rss": first.rss,
        "uss": first.uss,
        "accounted": 0,
    }


def test_samples_carry_what_bounded_structures_hold() -> None:
    sampler, *_ = make_sampler()
    held = [1000]
    sampler.accounting = lambda: held[0]
    first = sampler.sample()
    held[0] = 5000
    second = sampler.sample()
    assert (first.accounted, second.accounted) == (1000, 5000)
    assert series([first, second], unaccounted=True)[1] == [first.rss - 1000, second.rss - 5000]


def test_process_reader_reads_this_process() -> None:
    reader = ProcessMemoryReader()
    plain = reader(False)
    full = reader(True)
    assert plain.rss > 0
    assert plain.uss is None
    assert full.uss is None or full.uss > 0


@pytest.mark.parametrize(
    "kwargs",
    [{"interval_seconds": 0}, {"every_requests": -1}, {"uss_every": -1}, {"window": 1}],
)
def test_bad_options_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        MemorySampler(read=FakeMemory(), **kwargs)  # type: ignore[arg-type]
