"""Samples this process's memory into a bounded rolling window.

A sample is taken every ``interval_seconds`` and also after every ``every_requests``
completed requests, whichever comes first: time-based samples show memory while idle,
request-based ones give the trend analysis evenly spaced points under load.

RSS comes from one cheap ``/proc`` read. USS (memory only this process holds) needs
psutil's ``memory_full_info``, which walks every mapping of the process; it is read only
every ``uss_every`` samples, and never when ``uss_every`` is 0.

Reading memory, the clock and sleeping are injected, so tests drive the sampler with fake
readings and manual ticks instead of real time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import psutil

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class MemorySample:
    """One reading: when, after how many completed requests, and how many bytes."""

    time: float
    """Seconds on the sampler's clock (monotonic by default)."""
    requests: int
    rss: int
    uss: int | None
    """Only on the samples where USS was read."""
    accounted: int = 0
    """Bytes held at that moment by bounded structures that report their size."""

    @property
    def unaccounted(self) -> int:
        """RSS less what the bounded structures hold: where a leak would show."""
        return self.rss - self.accounted

    def as_dict(self) -> dict[str, object]:
        """A JSON-able view."""
        return {
            "time": self.time,
            "requests": self.requests,
            "rss": self.rss,
            "uss": self.uss,
            "accounted": self.accounted,
        }


@dataclass(frozen=True, slots=True)
class MemoryReading:
    """What a read function returns."""

    rss: int
    uss: int | None = None


ReadMemory = Callable[[bool], MemoryReading]
"""Reads this process's memory; the argument says whether USS is wanted this time."""

SampleListener = Callable[[MemorySample], object]


class ProcessMemoryReader:
    """The default `ReadMemory`: psutil on the current process."""

    def __init__(self) -> None:
        self._process = psutil.Process()

    def __call__(self, want_uss: bool) -> MemoryReading:
        rss = int(self._process.memory_info().rss)
        uss: int | None = None
        if want_uss:
            try:
                uss = int(self._process.memory_full_info().uss)
            except (psutil.AccessDenied, AttributeError, NotImplementedError):
                # Some platforms or hardened kernels do not expose USS; RSS is enough.
                uss = None
        return MemoryReading(rss, uss)


class MemorySampler:
    """Keeps the last ``window`` memory samples and tells listeners about each new one.

    Lifecycle: ``await start()`` takes a first sample and starts the background task;
    ``await stop()`` cancels it and may be called any number of times. ``record_request()``
    is the per-request hook: it only counts and, every ``every_requests``, wakes the task.
    """

    def __init__(
        self,
        *,
        interval_seconds: float = 5.0,
        every_requests: int = 100,
        window: int = 1024,
        uss_every: int = 12,
        read: ReadMemory | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        if interval_seconds <= 0:
            raise ValueError("interval_seconds must be positive")
        if every_requests < 0 or uss_every < 0:
            raise ValueError("every_requests and uss_every must not be negative")
        if window < 2:
            raise ValueError("window must hold at least 2 samples")
        self.interval_seconds = interval_seconds
        self.every_requests = every_requests
        self.uss_every = uss_every
        self._read: ReadMemory = read if read is not None else ProcessMemoryReader()
        self._clock = clock
        self._sleep = sleep
        self._window: deque[MemorySample] = deque(maxlen=window)
        self._listeners: list[SampleListener] = []
        self._requests = 0
        self._next_sample_at = every_requests
        self._taken = 0
        self._last_uss: int | None = None
        self._wake = asyncio.Event()
        self._tasks: tuple[asyncio.Task[None], ...] = ()
        #: Bytes held by bounded structures, read with each sample (the governor sets it).
        self.accounting: Callable[[], int] | None = None

    @property
    def requests(self) -> int:
        """Completed requests recorded so far."""
        return self._requests

    @property
    def window_size(self) -> int:
        """The most samples kept."""
        return self._window.maxlen or 0

    @property
    def samples(self) -> list[MemorySample]:
        """The samples in the window, oldest first (a copy)."""
        return list(self._window)

    @property
    def latest(self) -> MemorySample | None:
        """The newest sample, if any."""
        return self._window[-1] if self._window else None

    @property
    def last_uss(self) -> int | None:
        """The most recent USS reading, which may be older than the latest sample."""
        return self._last_uss

    @property
    def running(self) -> bool:
        """True between `start` and `stop`."""
        return bool(self._tasks)

    def subscribe(self, listener: SampleListener) -> None:
        """Call ``listener`` with every new sample (synchronously, in sampling order)."""
        self._listeners.append(listener)

    def record_request(self) -> None:
        """Count one completed request. O(1) and never blocks: sampling happens in the task."""
        self._requests += 1
        if self.every_requests and self._requests >= self._next_sample_at:
            self._wake.set()

    def sample(self) -> MemorySample:
        """Read memory now, add it to the window and notify listeners.

        Errors from the reading or a listener propagate to the caller; the background task
        logs them and keeps sampling.
        """
        want_uss = self.uss_every > 0 and self._taken % self.uss_every == 0
        reading = self._read(want_uss)
        self._taken += 1
        if reading.uss is not None:
            self._last_uss = reading.uss
        accounted = self.accounting() if self.accounting is not None else 0
        sample = MemorySample(self._clock(), self._requests, reading.rss, reading.uss, accounted)
        self._window.append(sample)
        self._next_sample_at = self._requests + self.every_requests
        for listener in self._listeners:
            listener(sample)
        return sample

    async def start(self) -> None:
        """Take a first sample and start sampling in the background."""
        if self._tasks:
            raise RuntimeError("the memory sampler is already running")
        self._wake.clear()
        self._sample_logging_errors()
        self._tasks = (
            asyncio.create_task(self._sample_on_wake(), name="chatkeep-memory-sampler"),
            asyncio.create_task(self._tick(), name="chatkeep-memory-ticker"),
        )

    async def stop(self) -> None:
        """Stop the background task. Safe to call when stopped, and more than once."""
        tasks, self._tasks = self._tasks, ()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _tick(self) -> None:
        # A separate ticker keeps the sampling loop to a single wait; a request-triggered
        # sample does not reset it, so the gap between samples never exceeds the interval.
        while True:
            await self._sleep(self.interval_seconds)
            self._wake.set()

    async def _sample_on_wake(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            self._sample_logging_errors()

    def _sample_logging_errors(self) -> None:
        # The sampler outlives any one bad reading or listener: log it and go on.
        try:
            self.sample()
        except Exception:
            logger.exception("memory sample failed")


def series(
    samples: Sequence[MemorySample], *, unaccounted: bool = False
) -> tuple[list[int], list[int], list[float]]:
    """Requests, RSS (or RSS less accounted bytes) and times, ready for `analyze_trend`."""
    return (
        [s.requests for s in samples],
        [s.unaccounted if unaccounted else s.rss for s in samples],
        [s.time for s in samples],
    )
