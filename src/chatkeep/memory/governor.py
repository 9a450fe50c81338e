"""The memory governor: tiers of memory pressure, and what each tier does.

Usage is RSS as a fraction of the budget. Tiers, lowest first, with their default
thresholds::

    ok        below warn
    warn      0.60   log once on entry, count it
    evict     0.70   a round at most every evict_interval_seconds: each registered
                     structure gives back a bounded share (evict_share of its bytes), then
                     gc.collect() (throttled), then malloc_trim(0) on glibc
    shed      0.85   also: `shedding` is true (new generations get 503 + Retry-After,
                     /readyz reports not ready)
    critical  0.95   also: `accepting_streams` is false

A tier is entered as soon as usage reaches its threshold and left only when usage falls
below threshold - hysteresis, so a process hovering at a threshold does not flap.

Structures register through `Reclaimable` and the governor never looks inside them: it asks
each for a share of its bytes and trusts it to give back expired entries first, then the
least useful ones. The clock, the sampler, `gc.collect` and `malloc_trim` are injected, so
tests step the state machine with synthetic samples and no real gigabytes.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Literal, Protocol, runtime_checkable

from chatkeep.domain.trend import TrendResult, analyze_trend
from chatkeep.errors import Overloaded
from chatkeep.memory.budget import MemoryBudget
from chatkeep.memory.sampler import MemorySample, MemorySampler, series
from chatkeep.memory.trim import MallocTrim, load_malloc_trim

logger = logging.getLogger(__name__)

Tier = Literal["ok", "warn", "evict", "shed", "critical"]
TIERS: tuple[Tier, ...] = ("ok", "warn", "evict", "shed", "critical")
_LEVEL: dict[Tier, int] = {tier: level for level, tier in enumerate(TIERS)}

#: Action counter names. ``warn``, ``shed`` and ``critical`` count entries into those tiers
#: (or jumps past them); ``evict`` counts reclaim rounds and ``reclaim_error`` structures that
#: failed in one; ``gc`` and ``trim`` count calls, ``gc_throttled`` collections skipped to stay
#: within the time share.
#: The least growth over the judged span that reads ``growing``: two of CPython's 1 MiB
#: allocator arenas, more than one step of RSS (see `chatkeep.domain.trend`, Resolution).
TREND_MIN_GROWTH_BYTES = 2 * 1024 * 1024

ACTIONS = ("warn", "evict", "reclaim_error", "gc", "gc_throttled", "trim", "shed", "critical")


@runtime_checkable
class Reclaimable(Protocol):
    """A bounded structure that can give memory back under pressure."""

    @property
    def name(self) -> str:
        """A short, stable name (it becomes a metric label)."""
        ...

    def nbytes(self) -> int:
        """Bytes the structure holds now, as it measures them."""
        ...

    def reclaim(self, fraction: float) -> int:
        """Give back about ``fraction`` of the bytes held; return the bytes freed."""
        ...


@dataclass(frozen=True, slots=True)
class TierThresholds:
    """Tier thresholds as fractions of the budget, and the hysteresis to leave one."""

    warn: float = 0.60
    evict: float = 0.70
    shed: float = 0.85
    critical: float = 0.95
    hysteresis: float = 0.05

    def __post_init__(self) -> None:
        if not 0.0 < self.warn < self.evict < self.shed < self.critical:
            raise ValueError("tier thresholds must satisfy 0 < warn < evict < shed < critical")
        if not 0.0 <= self.hysteresis < self.warn:
            raise ValueError("hysteresis must be at least 0 and below the warn threshold")

    def of(self, tier: Tier) -> float:
        """The fraction of the budget at which ``tier`` is entered (0 for ``ok``)."""
        return 0.0 if tier == "ok" else float(getattr(self, tier))

    def as_dict(self) -> dict[str, float]:
        """A JSON-able view."""
        return asdict(self)


class MemoryGovernor:
    """Watches memory samples, moves between tiers and takes each tier's actions.

    ``evaluate`` is subscribed to the sampler, so every sample steps the state machine;
    tests may call it directly with made-up samples.
    """

    def __init__(
        self,
        budget: MemoryBudget | int,
        sampler: MemorySampler,
        *,
        thresholds: TierThresholds | None = None,
        evict_share: float = 0.25,
        evict_interval_seconds: float = 2.0,
        gc_time_share: float = 0.02,
        retry_after_seconds: float = 5.0,
        trend_warmup_requests: int = 0,
        trend_min_growth_bytes: int = TREND_MIN_GROWTH_BYTES,
        clock: Callable[[], float] = time.monotonic,
        gc_collect: Callable[[], object] = gc.collect,
        malloc_trim: MallocTrim | Literal["auto"] | None = "auto",
    ) -> None:
        if not 0.0 < evict_share <= 1.0:
            raise ValueError("evict_share must be in (0, 1]")
        if evict_interval_seconds < 0:
            raise ValueError("evict_interval_seconds must not be negative")
        if not 0.0 < gc_time_share < 1.0:
            raise ValueError("gc_time_share must be in (0, 1)")
        self.budget = budget if isinstance(budget, MemoryBudget) else MemoryBudget(budget, "given")
        self.sampler = sampler
        self.thresholds = thresholds or TierThresholds()
        self.evict_share = evict_share
        self.evict_interval_seconds = evict_interval_seconds
        self.gc_time_share = gc_time_share
        self.retry_after_seconds = retry_after_seconds
        self.trend_warmup_requests = trend_warmup_requests
        self.trend_min_growth_bytes = trend_min_growth_bytes
        self._clock = clock
        self._gc_collect = gc_collect
        self._malloc_trim = load_malloc_trim() if malloc_trim == "auto" else malloc_trim
        self._structures: dict[str, Reclaimable] = {}
        self._tier: Tier = "ok"
        self._last: MemorySample | None = None
        self._actions = dict.fromkeys(ACTIONS, 0)
        self._reclaimed_bytes = 0
        self._gc_seconds = 0.0
        self._gc_allowed_at = float("-inf")
        self._evict_allowed_at = float("-inf")
        self._trend_cache: tuple[tuple[int, float], TrendResult] | None = None
        sampler.accounting = self.accounted_bytes
        sampler.subscribe(self.evaluate)

    # -- state ---------------------------------------------------------------------------

    @property
    def tier(self) -> Tier:
        """The current tier."""
        return self._tier

    @property
    def shedding(self) -> bool:
        """True in the shed and critical tiers: refuse new generations, report not ready."""
        return _LEVEL[self._tier] >= _LEVEL["shed"]

    @property
    def accepting_streams(self) -> bool:
        """False in the critical tier: refuse new reply streams too."""
        return self._tier != "critical"

    @property
    def fraction(self) -> float | None:
        """RSS of the last evaluated sample as a fraction of the budget."""
        return None if self._last is None else self._last.rss / self.budget.bytes

    @property
    def actions(self) -> dict[str, int]:
        """How many times each action was taken (a copy)."""
        return dict(self._actions)

    def ensure_generation_allowed(self) -> None:
        """Raise `Overloaded` (503 with Retry-After) while shedding load."""
        if self.shedding:
            raise Overloaded(
                f"memory pressure ({self._tier}): not starting new generations",
                retry_after=self.retry_after_seconds,
            )

    def ensure_stream_allowed(self) -> None:
        """Raise `Overloaded` (503 with Retry-After) in the critical tier."""
        if not self.accepting_streams:
            raise Overloaded(
                "memory pressure (critical): not opening new streams",
                retry_after=self.retry_after_seconds,
            )

    # -- registration --------------------------------------------------------------------

    def register(self, structure: Reclaimable) -> None:
        """Let the governor ask ``structure`` for memory back. Names must be unique."""
        if structure.name in self._structures:
            raise ValueError(f"a structure named {structure.name!r} is already registered")
        self._structures[structure.name] = structure

    @property
    def registered(self) -> dict[str, Reclaimable]:
        """The registered structures by name (a copy)."""
        return dict(self._structures)

    def unregister(self, name: str) -> None:
        """Forget a structure; unknown names are ignored."""
        self._structures.pop(name, None)

    # -- the state machine ---------------------------------------------------------------

    def evaluate(self, sample: MemorySample) -> Tier:
        """Step the tiers with ``sample`` and take the actions of the resulting tier."""
        self._last = sample
        fraction = sample.rss / self.budget.bytes
        previous = self._tier
        self._tier = self._next_tier(fraction)
        if self._tier != previous:
            self._on_transition(previous, self._tier, sample, fraction)
        if _LEVEL[self._tier] >= _LEVEL["evict"]:
            now = self._clock()
            # Under load the sampler may fire many times a second; spacing the rounds lets
            # the next sample show what the last round achieved before more is taken.
            if now >= self._evict_allowed_at:
                self._evict_allowed_at = now + self.evict_interval_seconds
                self._reclaim()
                self._collect()
        return self._tier

    def _next_tier(self, fraction: float) -> Tier:
        current = _LEVEL[self._tier]
        reached = max(
            level for level, tier in enumerate(TIERS) if fraction >= self.thresholds.of(tier)
        )
        if reached >= current:
            return TIERS[reached]
        # Step down one tier at a time, each only once usage is clearly below it.
        while (
            current > 0
            and fraction < self.thresholds.of(TIERS[current]) - self.thresholds.hysteresis
        ):
            current -= 1
        return TIERS[current]

    def _on_transition(
        self, previous: Tier, tier: Tier, sample: MemorySample, fraction: float
    ) -> None:
        up = _LEVEL[tier] > _LEVEL[previous]
        if up:
            # Count entries, not evaluations spent in a tier, so the counters say how often
            # pressure arrived; skipping tiers on a jump still counts the ones passed.
            for crossed in ("warn", "shed", "critical"):
                if _LEVEL[previous] < _LEVEL[crossed] <= _LEVEL[tier]:
                    self._actions[crossed] += 1
        logger.log(
            logging.WARNING if up else logging.INFO,
            "memory tier %s -> %s: rss %d bytes, %.1f%% of the %d byte budget (%s)",
            previous,
            tier,
            sample.rss,
            100.0 * fraction,
            self.budget.bytes,
            self.budget.source,
        )

    def _reclaim(self) -> None:
        """Ask every structure for the same bounded share of its bytes."""
        self._actions["evict"] += 1
        for structure in list(self._structures.values()):
            try:
                freed = structure.reclaim(self.evict_share)
            except Exception:
                # One faulty structure must not stop the others from giving memory back.
                self._actions["reclaim_error"] += 1
                logger.exception("reclaiming memory from %s failed", structure.name)
                continue
            self._reclaimed_bytes += max(0, int(freed))

    def _collect(self) -> None:
        """``gc.collect()`` then ``malloc_trim(0)``, at most ``gc_time_share`` of wall time.

        After a collection that took d seconds the next one waits d / share - d seconds, so
        over any stretch of time collections take at most ``gc_time_share`` of it, however
        big the heap is.
        """
        now = self._clock()
        if now < self._gc_allowed_at:
            self._actions["gc_throttled"] += 1
            return
        self._gc_collect()
        self._actions["gc"] += 1
        if self._malloc_trim is not None:
            try:
                self._malloc_trim(0)
                self._actions["trim"] += 1
            except Exception:
                logger.exception("malloc_trim failed")
        done = self._clock()
        duration = max(0.0, done - now)
        self._gc_seconds += duration
        self._gc_allowed_at = done + duration * (1.0 / self.gc_time_share - 1.0)

    # -- reporting -----------------------------------------------------------------------

    def accounted_bytes(self) -> int:
        """Bytes the registered structures say they hold (each bounded by its own limit)."""
        total = 0
        for structure in self._structures.values():
            with contextlib.suppress(Exception):  # a failing structure is reported elsewhere
                total += int(structure.nbytes())
        return total

    def trend(self) -> TrendResult:
        """The leak verdict over the sampler's window (cached until a new sample arrives).

        Judged on RSS less what the registered bounded structures hold: a cache filling
        up to its bound is memory growing on purpose, not a leak. `rss_trend` is the
        verdict on RSS alone.
        """
        samples = self._settled_samples()
        key = (len(samples), samples[-1].time if samples else 0.0)
        if self._trend_cache is None or self._trend_cache[0] != key:
            self._trend_cache = (
                key,
                analyze_trend(
                    *series(samples, unaccounted=True),
                    min_growth_bytes=self.trend_min_growth_bytes,
                ),
            )
        return self._trend_cache[1]

    def rss_trend(self) -> TrendResult:
        """The trend of RSS itself, bounded structures included."""
        return analyze_trend(
            *series(self._settled_samples()), min_growth_bytes=self.trend_min_growth_bytes
        )

    def _settled_samples(self) -> list[MemorySample]:
        # The first requests of a process warm its allocator and imports up; they say
        # nothing about leaks, so they never enter the verdict.
        return [s for s in self.sampler.samples if s.requests >= self.trend_warmup_requests]

    def structures(self) -> list[dict[str, object]]:
        """The registered structures and the bytes each holds (``None`` if it failed)."""
        out: list[dict[str, object]] = []
        for name, structure in self._structures.items():
            try:
                nbytes: int | None = int(structure.nbytes())
            except Exception:
                logger.exception("measuring %s failed", name)
                nbytes = None
            out.append({"name": name, "nbytes": nbytes})
        return out

    def snapshot(self) -> dict[str, object]:
        """Everything `/admin/memory` and `/metrics` show, as JSON-able values."""
        last = self._last
        return {
            "budget": self.budget.as_dict(),
            "rss": None if last is None else last.rss,
            "uss": self.sampler.last_uss,
            "requests": self.sampler.requests,
            "tier": self._tier,
            "fraction": self.fraction,
            "shedding": self.shedding,
            "accepting_streams": self.accepting_streams,
            "thresholds": self.thresholds.as_dict(),
            "trend": self.trend().as_dict(),
            "rss_trend": self.rss_trend().as_dict(),
            "accounted_bytes": None if last is None else last.accounted,
            "actions": self.actions,
            "reclaimed_bytes": self._reclaimed_bytes,
            "gc_seconds": self._gc_seconds,
            "malloc_trim": self._malloc_trim is not None,
            "window": {"samples": len(self.sampler.samples), "size": self.sampler.window_size},
            "structures": self.structures(),
        }
