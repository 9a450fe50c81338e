"""The memory watch of one server: sampler, governor and profiler built from settings."""

from __future__ import annotations

from dataclasses import dataclass

from chatkeep.memory.budget import resolve_budget
from chatkeep.memory.governor import MemoryGovernor, TierThresholds
from chatkeep.memory.profiler import MemoryProfiler
from chatkeep.memory.sampler import MemorySampler
from chatkeep.memory.sqlite_heap import load_sqlite_heap
from chatkeep.settings import Settings


@dataclass(slots=True)
class MemoryWatch:
    """What watches and governs the process's memory."""

    sampler: MemorySampler
    governor: MemoryGovernor
    profiler: MemoryProfiler


def build_memory_watch(settings: Settings) -> MemoryWatch:
    """Sampler, governor (budget from settings or the cgroup/RAM limits) and profiler."""
    sampler = MemorySampler(
        interval_seconds=settings.memory_sample_interval_seconds,
        every_requests=settings.memory_sample_every_requests,
        window=settings.memory_window_samples,
        uss_every=settings.memory_uss_every_samples,
    )
    governor = MemoryGovernor(
        resolve_budget(settings.memory_budget),
        sampler,
        thresholds=TierThresholds(
            warn=settings.memory_tier_warn,
            evict=settings.memory_tier_evict,
            shed=settings.memory_tier_shed,
            critical=settings.memory_tier_critical,
            hysteresis=settings.memory_hysteresis,
        ),
        evict_share=settings.memory_evict_share,
        evict_interval_seconds=settings.memory_evict_interval_seconds,
        gc_time_share=settings.memory_gc_time_share,
        retry_after_seconds=settings.memory_retry_after_seconds,
        trend_warmup_requests=settings.memory_trend_warmup_requests,
        malloc_trim="auto" if settings.memory_malloc_trim else None,
    )
    heap = load_sqlite_heap()
    if heap is not None:
        # SQLite's page caches are bounded but fill as the database grows; unreported,
        # that filling would read as a leak.
        governor.register(heap)
    profiler = MemoryProfiler(
        max_seconds=settings.memory_profile_max_seconds, max_top=settings.memory_profile_max_top
    )
    return MemoryWatch(sampler, governor, profiler)
