"""The soak engine: drive a target, sample the server's memory, and build the report.

Two ways to apply load, both always bounded by a request count or a duration:

* **Closed loop** (default): ``concurrency`` workers, each sending its next request as soon
  as the previous one is answered. This measures what the server sustains.
* **Open loop** (``rate``): requests are due at fixed times, whatever the server does, with
  at most ``concurrency`` in flight. When every slot is taken the schedule waits, and each
  request's latency counts from the moment it was *due*, not from when it could finally be
  sent: otherwise a stalled server would hide its stall from the percentiles (the
  "coordinated omission" mistake).

One aiohttp session serves the whole run, its pool sized to the concurrency, so the client
opens no more connections than it has requests in flight.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from datetime import UTC, datetime

import aiohttp

from chatkeep.soak.config import SoakConfig
from chatkeep.soak.probe import MemoryProbe, make_probe
from chatkeep.soak.progress import ProgressSink, ProgressSnapshot, SilentProgress
from chatkeep.soak.recorder import Recorder
from chatkeep.soak.report import SoakReport, build_report
from chatkeep.soak.targets import Outcome, Target, make_target

#: Progress is refreshed at least this often, whatever the sampling interval.
_PROGRESS_EVERY = 0.5
#: The progress rate is averaged over at least this many seconds.
_RATE_WINDOW = 1.0


async def run_soak(
    config: SoakConfig,
    *,
    progress: ProgressSink | None = None,
    probe: MemoryProbe | None = None,
    stop: asyncio.Event | None = None,
) -> SoakReport:
    """Run one soak and return its report.

    ``probe`` overrides the one ``config`` names (``pid`` / ``metrics_url``); a probe passed
    in is left open for its owner, one built here is closed here. Setting ``stop`` ends the
    run early, as a bound would: no new requests, those in flight finish, the report covers
    what was done.
    """
    owned_probe = probe is None
    if probe is None:
        probe = make_probe(
            pid=config.pid, metrics_url=config.metrics_url, uss_every=config.uss_every
        )
    recorder = Recorder(
        max_latency_points=config.max_latency_points,
        max_memory_samples=config.max_memory_samples,
    )
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    try:
        connector = aiohttp.TCPConnector(limit=config.concurrency, limit_per_host=0)
        async with aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=config.timeout),
            # Requests are independent; a cookie jar would only cost time on every request.
            cookie_jar=aiohttp.DummyCookieJar(),
        ) as session:
            target = make_target(session, config, lanes=config.concurrency)
            run = _LoadRun(config, target, recorder, probe, progress or SilentProgress(), stop)
            duration = await run.execute()
            target_stats = target.stats()
    finally:
        if owned_probe and probe is not None:
            await probe.aclose()
    return build_report(
        config,
        recorder,
        target=target.description,
        probe=probe.description if probe is not None else None,
        started_at=started_at,
        duration=duration,
        target_stats=target_stats,
        probe_error=run.probe_error,
        stopped_early=run.stopped_early,
    )


class _LoadRun:
    """One run's moving parts: the load loop, the monitor, and the bookkeeping they share."""

    def __init__(
        self,
        config: SoakConfig,
        target: Target,
        recorder: Recorder,
        probe: MemoryProbe | None,
        progress: ProgressSink,
        stop: asyncio.Event | None,
    ) -> None:
        self._config = config
        self._target = target
        self._recorder = recorder
        self._probe = probe
        self._progress = progress
        self._stop = stop if stop is not None else asyncio.Event()
        self._issued = 0
        self._t0 = 0.0
        self._deadline = math.inf
        self._rss: int | None = None
        self.probe_error: str | None = None
        self.stopped_early = False

    async def execute(self) -> float:
        """Apply the load until a bound is reached; return its duration in seconds."""
        # The baseline is the idle server, before the first request.
        await self._sample(0.0)
        self._t0 = time.perf_counter()
        if self._config.duration is not None:
            self._deadline = self._t0 + self._config.duration
        monitor_done = asyncio.Event()
        self._progress.start()
        try:
            async with asyncio.TaskGroup() as group:
                monitor = group.create_task(self._monitor(monitor_done))
                try:
                    if self._config.open_loop:
                        await self._open_loop()
                    else:
                        await self._closed_loop()
                finally:
                    monitor_done.set()
                await monitor
            duration = time.perf_counter() - self._t0
            # The end state, once every request has been answered.
            await self._sample(duration)
            self._progress.update(self._snapshot(duration, 0.0))
        finally:
            self._progress.stop()
        return duration

    def _take_ticket(self) -> int | None:
        """The next request's number, or ``None`` when a bound (or a stop) is reached."""
        limit = self._config.requests
        if limit is not None and self._issued >= limit:
            return None
        if self._stop.is_set():
            self.stopped_early = True
            return None
        if time.perf_counter() >= self._deadline:
            return None
        number = self._issued
        self._issued += 1
        return number

    async def _closed_loop(self) -> None:
        async with asyncio.TaskGroup() as group:
            for lane in range(self._config.concurrency):
                group.create_task(self._worker(lane))

    async def _worker(self, lane: int) -> None:
        while (number := self._take_ticket()) is not None:
            self._recorder.record(await self._target.send(lane, number))

    async def _open_loop(self) -> None:
        assert self._config.rate is not None
        interval = 1.0 / self._config.rate
        free_lanes: asyncio.Queue[int] = asyncio.Queue()
        for lane in range(self._config.concurrency):
            free_lanes.put_nowait(lane)
        due = self._t0
        slots_freed_at = -math.inf
        async with asyncio.TaskGroup() as group:
            while True:
                wait = due - time.perf_counter()
                if wait > 0:
                    # Wake for the next due request, or at once when told to stop.
                    await _wait_for_event(self._stop, wait)
                number = self._take_ticket()
                if number is None:
                    break
                if free_lanes.empty():
                    # Every slot is busy: that is the in-flight bound, and the server's doing.
                    lane = await free_lanes.get()
                    slots_freed_at = time.perf_counter()
                else:
                    lane = free_lanes.get_nowait()
                # A request that fell due while every slot was busy is charged the wait; one
                # that is merely a timer tick late is not (that lateness is the client's).
                late_since = due if due < slots_freed_at else None
                group.create_task(self._open_request(lane, number, late_since, free_lanes))
                due += interval

    async def _open_request(
        self, lane: int, number: int, late_since: float | None, free_lanes: asyncio.Queue[int]
    ) -> None:
        try:
            late = time.perf_counter() - late_since if late_since is not None else 0.0
            outcome = await self._target.send(lane, number)
            if late > 0.0:
                outcome = _delayed(outcome, late)
            self._recorder.record(outcome)
        finally:
            free_lanes.put_nowait(lane)

    async def _monitor(self, done: asyncio.Event) -> None:
        """Sample memory and refresh progress until the load is over."""
        interval = self._config.sample_interval
        tick = min(interval, _PROGRESS_EVERY)
        next_sample = interval
        rate = 0.0
        rate_since, rate_base = 0.0, 0
        while not done.is_set():
            if await _wait_for_event(done, tick):
                return
            elapsed = time.perf_counter() - self._t0
            if self._probe is not None and elapsed >= next_sample:
                await self._sample(elapsed)
                next_sample = elapsed + interval
            if elapsed - rate_since >= _RATE_WINDOW:
                rate = (self._recorder.completed - rate_base) / (elapsed - rate_since)
                rate_since, rate_base = elapsed, self._recorder.completed
            self._progress.update(self._snapshot(elapsed, rate))

    async def _sample(self, elapsed: float) -> None:
        if self._probe is None:
            return
        reading = await self._probe.read()
        if reading is None:
            self.probe_error = getattr(self._probe, "last_error", None) or "probe gave no reading"
            return
        self._recorder.record_memory(elapsed, reading)
        self._rss = reading.rss

    def _snapshot(self, elapsed: float, rate: float) -> ProgressSnapshot:
        if rate == 0.0 and elapsed > 0:
            rate = self._recorder.completed / elapsed
        return ProgressSnapshot(
            elapsed=elapsed,
            completed=self._recorder.completed,
            errors=self._recorder.error_count,
            rate=rate,
            rss=self._rss,
            requests_limit=self._config.requests,
            duration_limit=self._config.duration,
        )


def _delayed(outcome: Outcome, late: float) -> Outcome:
    """The outcome as seen from the moment the request was due."""
    ttft = outcome.ttft + late if outcome.ttft is not None else None
    return dataclasses.replace(outcome, latency=outcome.latency + late, ttft=ttft)


async def _wait_for_event(event: asyncio.Event, seconds: float) -> bool:
    """Wait up to ``seconds`` for ``event``; whether it was set."""
    if event.is_set():
        return True
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return False
    return True
