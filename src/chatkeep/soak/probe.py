"""How much memory does the server under test hold? Two ways to ask.

* `ProcessProbe` reads RSS (and, sparsely, USS) of a process and its children with psutil.
  The process tree is re-listed only every few seconds (listing children scans every
  process on the machine), and USS only every ``uss_every`` samples (it walks the whole
  memory map). The reads run in a worker thread so the load never waits on ``/proc``.
* `MetricsProbe` reads the resident memory gauge of a Prometheus ``/metrics`` page, for a
  server on another machine or in a container.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from typing import Protocol

import aiohttp
import psutil

#: Gauges read from ``/metrics``, in order of preference.
RSS_GAUGES = ("chatkeep_process_resident_memory_bytes", "process_resident_memory_bytes")
#: Read as USS when a server exposes it.
USS_GAUGES = ("chatkeep_process_unique_memory_bytes",)


@dataclass(frozen=True, slots=True)
class MemoryReading:
    """One reading of the server's memory, in bytes."""

    rss: int
    uss: int | None = None


class MemoryProbe(Protocol):
    """Reads the memory of the server under test."""

    description: str
    """A short label for reports, e.g. ``pid 1234`` or a metrics URL."""

    async def read(self) -> MemoryReading | None:
        """One reading, or ``None`` when none could be taken this time."""
        ...

    async def aclose(self) -> None:
        """Release what the probe holds; safe to call twice."""
        ...


class ProcessProbe:
    """RSS of a process and its children (summed), with USS on every ``uss_every``-th read."""

    def __init__(self, pid: int, *, uss_every: int = 8, children_every: float = 2.0) -> None:
        self.description = f"pid {pid}"
        self._process = psutil.Process(pid)
        self._uss_every = uss_every
        self._children_every = children_every
        self._children: list[psutil.Process] = []
        self._children_listed = -float("inf")
        self._reads = 0
        self._uss_allowed = True
        self.last_error: str | None = None

    async def read(self) -> MemoryReading | None:
        """Read in a worker thread; ``None`` once the process is gone."""
        want_uss = self._uss_allowed and self._reads % self._uss_every == 0
        self._reads += 1
        return await asyncio.to_thread(self._read_blocking, want_uss)

    def _read_blocking(self, want_uss: bool) -> MemoryReading | None:
        now = time.monotonic()
        try:
            if now - self._children_listed >= self._children_every:
                self._children = self._process.children(recursive=True)
                self._children_listed = now
            rss = self._process.memory_info().rss
        except psutil.Error as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            return None
        uss: int | None = None
        if want_uss:
            try:
                uss = self._process.memory_full_info().uss
            except psutil.AccessDenied:
                # USS needs to read another user's smaps; keep RSS and stop asking.
                self._uss_allowed = False
            except psutil.Error:
                pass
        for child in self._children:
            try:
                rss += child.memory_info().rss
                if uss is not None:
                    uss += child.memory_full_info().uss
            except psutil.Error:
                # A child that exited between the listing and now holds no memory.
                continue
        return MemoryReading(rss, uss)

    async def aclose(self) -> None:
        """Nothing to release."""


def parse_gauges(text: str, names: tuple[str, ...]) -> float | None:
    """The value of the first of ``names`` found in Prometheus text (labelled series summed)."""
    found: dict[str, float] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        brace, space = line.find("{"), line.find(" ")
        if brace != -1 and (space == -1 or brace < space):
            # Label values may hold spaces: the value follows the closing brace.
            name, rest = line[:brace], line[line.rfind("}") + 1 :]
        else:
            name, _, rest = line.partition(" ")
        if name not in names:
            continue
        try:
            value = float(rest.split()[0])
        except (IndexError, ValueError):
            continue
        if math.isfinite(value):
            found[name] = found.get(name, 0.0) + value
    for name in names:
        if name in found:
            return found[name]
    return None


class MetricsProbe:
    """The resident memory gauge of a Prometheus ``/metrics`` URL.

    It has its own one-connection session: sharing the load's pool would make the probe
    queue behind the load exactly when the server is busiest.
    """

    def __init__(self, url: str, *, timeout: float = 5.0) -> None:
        self.description = url
        self._url = url
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self.last_error: str | None = None

    async def read(self) -> MemoryReading | None:
        """One scrape; ``None`` when it fails or shows no resident memory gauge."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=1), timeout=self._timeout
            )
        try:
            async with self._session.get(self._url) as response:
                text = await response.text()
                if response.status != 200:
                    self.last_error = f"http_{response.status}"
                    return None
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            return None
        rss = parse_gauges(text, RSS_GAUGES)
        if rss is None:
            self.last_error = "no resident memory gauge in the metrics"
            return None
        uss = parse_gauges(text, USS_GAUGES)
        return MemoryReading(int(rss), int(uss) if uss is not None else None)

    async def aclose(self) -> None:
        """Close the probe's session (again is harmless)."""
        if self._session is not None:
            await self._session.close()
            self._session = None


def make_probe(
    *,
    pid: int | None,
    metrics_url: str | None,
    uss_every: int = 8,
) -> MemoryProbe | None:
    """The probe named by the options, or ``None`` when memory is not sampled."""
    if pid is not None:
        return ProcessProbe(pid, uss_every=uss_every)
    if metrics_url is not None:
        return MetricsProbe(metrics_url)
    return None
