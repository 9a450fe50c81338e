"""The memory watch of one server: sampler, governor and profiler built from settings."""

from __future__ import annotations

from dataclasses import dataclass

from chatkeep.memory.budget import resolve_budget
from chatkeep.memory.governor import MemoryGovernor, TierThresholds
from chatkeep.memory.profiler import MemoryProfiler
from chatkeep.memory.sampler import MemorySampler
from chatkeep.memory.sqlite_heap import load_sqlite_heap
from chatkeep.settings import MemorySettings


@dataclass(slots=True)
class MemoryWatch:
    """What watches and governs the process's memory."""

    sampler: MemorySampler
    governor: MemoryGovernor
    profiler: MemoryProfiler


def build_memory_watch(settings: MemorySettings) -> MemoryWatch:
    """Sampler, governor (budget from settings or the cgroup/RAM limits) and profiler."""
    sampler = MemorySampler(
        interval_seconds=settings.sample_interval_seconds,
        every_requests=settings.sample_every_requests,
        window=settings.window_samples,
        uss_every=settings.uss_every_samples,
    )
    governor = MemoryGovernor(
        resolve_budget(settings.budget),
        sampler,
        thresholds=TierThresholds(
            warn=settings.tier_warn,
            evict=settings.tier_evict,
            shed=settings.tier_shed,
            critical=settings.tier_critical,
            hysteresis=settings.hysteresis,
        ),
        evict_share=settings.evict_share,
        evict_interval_seconds=settings.evict_interval_seconds,
        gc_time_share=settings.gc_time_share,
        retry_after_seconds=settings.retry_after_seconds,
        trend_warmup_requests=settings.trend_warmup_requests,
        malloc_trim="auto" if settings.malloc_trim else None,
    )
    heap = load_sqlite_heap()
    if heap is not None:
        # SQLite's page caches are bounded but fill as the database grows; unreported,
        # that filling would read as a leak.
        governor.register(heap)
    profiler = MemoryProfiler(
        max_seconds=settings.profile_max_seconds, max_top=settings.profile_max_top
    )
    return MemoryWatch(sampler, governor, profiler)
