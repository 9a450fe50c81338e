"""On-demand ``tracemalloc`` diff: which source lines allocated memory that is still held.

A profile traces allocations for a bounded number of seconds, takes a snapshot at each end,
and compares them line by line. Tracing slows every allocation and costs memory of its own,
so it runs only on request, one profile at a time in the whole process (``tracemalloc`` is
process-wide state), and stops afterwards unless something else had started it.
"""

from __future__ import annotations

import asyncio
import gc
import math
import time
import tracemalloc
from collections.abc import Awaitable, Callable

from chatkeep.errors import Conflict, InvalidRequest

#: Frames that describe the measuring, not the program measured.
_IGNORED_FILES = (
    tracemalloc.__file__,
    __file__,
    "<frozen importlib._bootstrap>",
    "<frozen importlib._bootstrap_external>",
    "<unknown>",
)

# Process-wide, because tracemalloc is: two profilers must not stop each other's tracing.
_profile_running = False


class MemoryProfiler:
    """Runs bounded ``tracemalloc`` profiles. The sleep and clock are injected for tests."""

    def __init__(
        self,
        *,
        max_seconds: float = 60.0,
        max_top: int = 100,
        frames: int = 1,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_seconds <= 0 or max_top < 1 or frames < 1:
            raise ValueError("max_seconds, max_top and frames must be positive")
        self.max_seconds = max_seconds
        self.max_top = max_top
        self.frames = frames
        self._sleep = sleep
        self._clock = clock

    @property
    def busy(self) -> bool:
        """True while a profile is running anywhere in the process."""
        return _profile_running

    async def profile(self, seconds: float, top: int = 20) -> dict[str, object]:
        """Trace for ``seconds`` and return the ``top`` lines by growth, and the cost.

        Raises `InvalidRequest` for out-of-range arguments and `Conflict` while another
        profile runs. The result::

            {"seconds": ..., "duration_seconds": ..., "top": [{"file", "line",
             "size_diff", "count_diff"}, ...], "size_diff_total": ...,
             "cost": {"tracemalloc_bytes", "traced_bytes", "traced_peak_bytes",
                      "started_tracing", "frames", "snapshot_seconds"}}
        """
        global _profile_running
        self._validate(seconds, top)
        if _profile_running:
            raise Conflict("a memory profile is already running; try again when it ends")
        _profile_running = True
        started_tracing = not tracemalloc.is_tracing()
        try:
            if started_tracing:
                tracemalloc.start(self.frames)
            frames = tracemalloc.get_traceback_limit()
            began = self._clock()
            first = tracemalloc.take_snapshot()
            snapshot_seconds = self._clock() - began
            await self._sleep(seconds)
            second_began = self._clock()
            # Garbage waiting for the cycle collector is not growth: collect it first.
            gc.collect()
            second = tracemalloc.take_snapshot()
            snapshot_seconds += self._clock() - second_began
            # Measured before stopping: stopping frees the traces and their cost with them.
            tracing_cost = tracemalloc.get_tracemalloc_memory()
            traced, traced_peak = tracemalloc.get_traced_memory()
            duration = self._clock() - began
        finally:
            if started_tracing:
                tracemalloc.stop()
            _profile_running = False

        filters = [tracemalloc.Filter(False, name) for name in _IGNORED_FILES]
        diff = second.filter_traces(filters).compare_to(first.filter_traces(filters), "lineno")
        growing = sorted(
            (stat for stat in diff if stat.size_diff > 0),
            key=lambda stat: stat.size_diff,
            reverse=True,
        )
        lines = [
            {
                "file": stat.traceback[0].filename,
                "line": stat.traceback[0].lineno,
                "size_diff": stat.size_diff,
                "count_diff": stat.count_diff,
            }
            for stat in growing[:top]
        ]
        return {
            "seconds": seconds,
            "duration_seconds": duration,
            "top": lines,
            "size_diff_total": sum(stat.size_diff for stat in growing),
            "cost": {
                "tracemalloc_bytes": tracing_cost,
                "traced_bytes": traced,
                "traced_peak_bytes": traced_peak,
                "started_tracing": started_tracing,
                "frames": frames,
                "snapshot_seconds": snapshot_seconds,
            },
        }

    def _validate(self, seconds: float, top: int) -> None:
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, (int, float))
            or not math.isfinite(seconds)
            or not 0 < seconds <= self.max_seconds
        ):
            raise InvalidRequest(f"seconds must be a number in (0, {self.max_seconds:g}]")
        if isinstance(top, bool) or not isinstance(top, int) or not 1 <= top <= self.max_top:
            raise InvalidRequest(f"top must be an integer from 1 to {self.max_top}")
