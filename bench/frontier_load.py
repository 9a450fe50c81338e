"""Open-loop load at a fixed arrival rate, timed from when each request was *due*.

A closed-loop generator (wrk, the soak engine) sends the next request when an answer comes
back, so a server that stalls is sent less and its stall hides in a few slow samples
(coordinated omission). Here each of ``lanes`` connections has its own schedule: request
``k`` of lane ``i`` is due at ``start + (i + k * lanes) / rate``, whatever happened before.
A lane that falls behind sends at once when it is free, and the latency is counted from
the due time, as wrk2 counts it: waiting for a free lane is part of what a client of a
slow server sees. A lane that is free waits for its due time on the event loop's timer,
and is timed from when that timer let it go (a timer fires up to a millisecond late).

The generator is an aiohttp client in this process; it costs the machine more per request
than the server it measures against, so its own ceiling is measured against the direct
backend and reported with the frontier.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import aiohttp

#: An answer later than this is given up and counted as an error.
REQUEST_TIMEOUT = 10.0

#: Makes the request a lane sends next: ``(lane, k) -> (path, body)``.
Requests = Callable[[int, int], tuple[str, bytes]]


@dataclass
class RateRun:
    """What one run at a fixed offered rate saw."""

    offered_rps: float
    seconds: float
    latencies: list[float] = field(default_factory=list)
    """Seconds from each answered request's due time to its answer's last byte."""
    errors: Counter[str] = field(default_factory=Counter)
    behind: int = 0
    """Requests whose lane was still busy at their due time (timed from the due time)."""
    timer_late: list[float] = field(default_factory=list)
    """How late the timer let each of the others go (the generator's own imprecision)."""

    @property
    def answered(self) -> int:
        return len(self.latencies)

    @property
    def achieved_rps(self) -> float:
        return self.answered / self.seconds if self.seconds > 0 else 0.0

    def p99_ms(self) -> float | None:
        return percentile_ms(self.latencies, 0.99)

    def as_dict(self) -> dict[str, object]:
        return {
            "offered_rps": round(self.offered_rps, 1),
            "achieved_rps": round(self.achieved_rps, 1),
            "answered": self.answered,
            "errors": dict(self.errors),
            "sent_behind_schedule": self.behind,
            "timer_late_ms": {
                "p50": percentile_ms(self.timer_late, 0.5),
                "p99": percentile_ms(self.timer_late, 0.99),
            },
            "latency_ms": {
                name: percentile_ms(self.latencies, share)
                for name, share in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0))
            },
        }


def percentile_ms(values: Sequence[float], share: float) -> float | None:
    """The nearest-rank percentile of seconds, in milliseconds; None without values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(share * len(ordered)))
    return round(ordered[rank - 1] * 1000, 3)


def due_time(start: float, lane: int, k: int, lanes: int, rate: float) -> float:
    """When request ``k`` of ``lane`` is due, on a schedule of ``rate`` per second overall."""
    return start + (lane + k * lanes) / rate


async def offer(
    base_url: str,
    requests: Requests,
    *,
    rate: float,
    seconds: float,
    lanes: int,
) -> RateRun:
    """Send ``rate`` requests a second for ``seconds`` over ``lanes`` connections."""
    run = RateRun(offered_rps=rate, seconds=seconds)
    connector = aiohttp.TCPConnector(limit=lanes, force_close=False)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(
        base_url, connector=connector, timeout=timeout, headers=headers
    ) as session:
        start = time.perf_counter() + 0.05
        end = start + seconds

        async def lane(number: int) -> None:
            for k in range(math.ceil(seconds * rate / lanes) + 1):
                due = due_time(start, number, k, lanes, rate)
                if due >= end:
                    return
                now = time.perf_counter()
                if due > now:
                    # The lane is free before its due time: timed from when the timer
                    # lets it send (an event loop's timers fire up to a millisecond late,
                    # which is the generator's error, not the server's latency).
                    await asyncio.sleep(due - now)
                    sent = time.perf_counter()
                    run.timer_late.append(sent - due)
                else:
                    # The lane was still busy with an earlier answer at its due time:
                    # timed from the due time, so a slow server cannot hide its backlog.
                    sent = due
                    run.behind += 1
                path, body = requests(number, k)
                try:
                    async with session.post(path, data=body) as response:
                        await response.read()
                        status = response.status
                except TimeoutError:
                    run.errors["timeout"] += 1
                    continue
                except aiohttp.ClientError as exc:
                    run.errors[type(exc).__name__] += 1
                    continue
                if status != 200:
                    run.errors[f"status_{status}"] += 1
                    continue
                run.latencies.append(time.perf_counter() - sent)

        await asyncio.gather(*(lane(n) for n in range(lanes)))
    return run


async def closed_loop_ceiling(
    base_url: str, requests: Requests, *, lanes: int, seconds: float
) -> float:
    """Answers a second with every lane sending again at once: this client's own ceiling."""
    connector = aiohttp.TCPConnector(limit=lanes, force_close=False)
    headers = {"Content-Type": "application/json"}
    answered = 0
    async with aiohttp.ClientSession(base_url, connector=connector, headers=headers) as session:
        started = time.perf_counter()
        end = started + seconds

        async def lane(number: int) -> None:
            nonlocal answered
            k = 0
            while time.perf_counter() < end:
                path, body = requests(number, k)
                k += 1
                async with session.post(path, data=body) as response:
                    await response.read()
                    answered += response.status == 200

        await asyncio.gather(*(lane(n) for n in range(lanes)))
        return answered / (time.perf_counter() - started)
