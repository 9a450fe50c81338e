"""`Recorder`: what a soak run has seen so far, in memory that does not grow with the run.

Latencies go into log-bucket histograms (`LogHistogram`, percentiles within 1 %); the
per-request points the plot draws and the memory samples the trend test reads go into
thinned series (`ThinnedSeries`); errors are counted by class, and the number of classes is
capped so that a server answering with ever new statuses cannot grow the recorder either.
"""

from __future__ import annotations

from dataclasses import dataclass

from chatkeep.soak.histogram import LogHistogram
from chatkeep.soak.probe import MemoryReading
from chatkeep.soak.series import ThinnedSeries
from chatkeep.soak.targets import Outcome

#: Error classes counted separately; any further class is counted as ``other``.
MAX_ERROR_CLASSES = 64
#: Length of the example message kept for each error class.
EXAMPLE_LENGTH = 200


@dataclass(frozen=True, slots=True)
class MemorySample:
    """The server's memory at one moment of the run."""

    seconds: float
    """Since the load started."""
    requests: int
    """Requests completed by then."""
    rss: int
    uss: int | None = None


@dataclass(frozen=True, slots=True)
class LatencyPoint:
    """One request, for the plot."""

    request: int
    """Its position among completed requests."""
    latency: float
    ttft: float | None
    ok: bool


class Recorder:
    """Counts, histograms and bounded series of one run."""

    def __init__(self, *, max_latency_points: int = 4096, max_memory_samples: int = 2048) -> None:
        self.completed = 0
        self.successes = 0
        self.errors: dict[str, int] = {}
        self.error_examples: dict[str, str] = {}
        self.latency = LogHistogram()
        """Latency of successful requests (a fast ``503`` says nothing about service time)."""
        self.ttft = LogHistogram()
        """Time to first token of successful streamed requests."""
        self.latency_points: ThinnedSeries[LatencyPoint] = ThinnedSeries(max_latency_points)
        self.memory: ThinnedSeries[MemorySample] = ThinnedSeries(max_memory_samples)
        self.memory_first: MemorySample | None = None
        self.memory_peak: MemorySample | None = None
        self.memory_last: MemorySample | None = None
        self.uss_first: int | None = None
        self.uss_peak: int | None = None
        self.uss_last: int | None = None

    @property
    def error_count(self) -> int:
        """Requests that failed, whatever the class."""
        return self.completed - self.successes

    def record(self, outcome: Outcome) -> None:
        """Count one finished request."""
        self.completed += 1
        ok = outcome.error is None
        if ok:
            self.successes += 1
            self.latency.record(outcome.latency)
            if outcome.ttft is not None:
                self.ttft.record(outcome.ttft)
        else:
            self._count_error(outcome.error or "other", outcome.detail)
        self.latency_points.append(LatencyPoint(self.completed, outcome.latency, outcome.ttft, ok))

    def _count_error(self, name: str, detail: str | None) -> None:
        if name not in self.errors and len(self.errors) >= MAX_ERROR_CLASSES:
            name = "other"
        self.errors[name] = self.errors.get(name, 0) + 1
        if name not in self.error_examples and detail:
            self.error_examples[name] = detail[:EXAMPLE_LENGTH]

    def record_memory(self, seconds: float, reading: MemoryReading) -> MemorySample:
        """Keep one memory reading, taken ``seconds`` into the run."""
        sample = MemorySample(seconds, self.completed, reading.rss, reading.uss)
        self.memory.append(sample)
        if self.memory_first is None:
            self.memory_first = sample
        if self.memory_peak is None or sample.rss > self.memory_peak.rss:
            self.memory_peak = sample
        self.memory_last = sample
        if reading.uss is not None:
            if self.uss_first is None:
                self.uss_first = reading.uss
            self.uss_peak = max(self.uss_peak or 0, reading.uss)
            self.uss_last = reading.uss
        return sample
