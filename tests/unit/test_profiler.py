"""The tracemalloc profiler names the lines that allocate inside its window."""

from __future__ import annotations

import asyncio
import inspect
import math
import tracemalloc
from collections.abc import Iterator

import pytest

from chatkeep.errors import Conflict, InvalidRequest
from chatkeep.memory import profiler as profiler_module
from chatkeep.memory.profiler import MemoryProfiler

MUST_NOT_FIRE = 5.0

kept: list[object] = []


@pytest.fixture(autouse=True)
def _not_tracing() -> Iterator[None]:
    if tracemalloc.is_tracing():
        pytest.skip("the test run itself traces allocations")
    yield
    kept.clear()
    assert not tracemalloc.is_tracing()


class LeakySleep:
    """Stands in for the profile window: allocates about 1 MB on one known line."""

    def __init__(self) -> None:
        self.line = 0
        self.asked: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.asked.append(seconds)
        frame = inspect.currentframe()
        assert frame is not None
        self.line = frame.f_lineno + 1
        kept.append([bytearray(1000) for _ in range(1000)])


class Ticks:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        self.now += 0.25
        return self.now


async def test_a_deliberate_allocation_is_named_by_file_and_line() -> None:
    sleep = LeakySleep()
    profiler = MemoryProfiler(sleep=sleep, clock=Ticks())
    report = await profiler.profile(seconds=30, top=5)
    assert sleep.asked == [30]
    top = report["top"]
    assert isinstance(top, list)
    assert top[0]["file"] == __file__
    assert top[0]["line"] == sleep.line
    assert top[0]["size_diff"] >= 1_000_000
    assert top[0]["count_diff"] >= 1000
    assert len(top) <= 5
    assert all(entry["size_diff"] > 0 for entry in top)
    files = {entry["file"] for entry in top}
    assert profiler_module.__file__ not in files
    assert tracemalloc.__file__ not in files
    assert not any(name.startswith("<frozen importlib") for name in files)


async def test_the_report_says_what_tracing_costs() -> None:
    profiler = MemoryProfiler(sleep=LeakySleep(), clock=Ticks())
    report = await profiler.profile(seconds=1, top=1)
    assert report["seconds"] == 1
    # Five clock reads 0.25 s apart: start, after the first snapshot, before and after the
    # second, and the end.
    assert report["duration_seconds"] == pytest.approx(1.0)
    cost = report["cost"]
    assert isinstance(cost, dict)
    assert cost["tracemalloc_bytes"] > 0
    assert cost["traced_bytes"] > 0
    assert cost["traced_peak_bytes"] >= cost["traced_bytes"]
    assert cost["started_tracing"] is True
    assert cost["frames"] == 1
    assert cost["snapshot_seconds"] == pytest.approx(0.5)
    assert isinstance(report["size_diff_total"], int)


async def test_tracing_started_elsewhere_is_left_running() -> None:
    tracemalloc.start(3)
    try:
        report = await MemoryProfiler(sleep=LeakySleep()).profile(seconds=1, top=3)
        assert tracemalloc.is_tracing()
        cost = report["cost"]
        assert isinstance(cost, dict)
        assert cost["started_tracing"] is False
        assert cost["frames"] == 3
    finally:
        tracemalloc.stop()


async def test_only_one_profile_at_a_time() -> None:
    release = asyncio.Event()
    entered = asyncio.Event()

    async def held_open(seconds: float) -> None:
        entered.set()
        await release.wait()

    first_profiler = MemoryProfiler(sleep=held_open)
    first = asyncio.create_task(first_profiler.profile(seconds=1, top=1))
    try:
        await asyncio.wait_for(entered.wait(), MUST_NOT_FIRE)
        assert first_profiler.busy
        with pytest.raises(Conflict, match="already running"):
            await first_profiler.profile(seconds=1, top=1)
        # tracemalloc is process-wide, so another profiler is refused too.
        with pytest.raises(Conflict):
            await MemoryProfiler(sleep=held_open).profile(seconds=1, top=1)
    finally:
        release.set()
        await asyncio.wait_for(first, MUST_NOT_FIRE)
    assert not first_profiler.busy
    await MemoryProfiler(sleep=LeakySleep()).profile(seconds=1, top=1)


async def test_a_cancelled_profile_stops_tracing_and_frees_the_slot() -> None:
    entered = asyncio.Event()

    async def forever(seconds: float) -> None:
        entered.set()
        await asyncio.Event().wait()

    profiler = MemoryProfiler(sleep=forever)
    task = asyncio.create_task(profiler.profile(seconds=1, top=1))
    await asyncio.wait_for(entered.wait(), MUST_NOT_FIRE)
    assert tracemalloc.is_tracing()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not tracemalloc.is_tracing()
    assert not profiler.busy


@pytest.mark.parametrize("seconds", [0, -1, math.nan, math.inf, 61, True, "5"])
async def test_seconds_are_bounded(seconds: object) -> None:
    profiler = MemoryProfiler(max_seconds=60, sleep=LeakySleep())
    with pytest.raises(InvalidRequest, match="seconds"):
        await profiler.profile(seconds=seconds, top=5)  # type: ignore[arg-type]
    assert not tracemalloc.is_tracing()


@pytest.mark.parametrize("top", [0, -3, 101, 2.5, True])
async def test_top_is_bounded(top: object) -> None:
    profiler = MemoryProfiler(max_top=100, sleep=LeakySleep())
    with pytest.raises(InvalidRequest, match="top"):
        await profiler.profile(seconds=1, top=top)  # type: ignore[arg-type]


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError):
        MemoryProfiler(max_seconds=0)
