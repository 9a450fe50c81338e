"""`SoakReport`: the numbers of a soak run, the leak verdict, and writing them out.

The verdict comes from `chatkeep.domain.trend.analyze_trend`, the same test the memory
governor runs on the server: RSS against requests completed, warm-up ignored, a robust
(Theil-Sen) slope, Mann-Kendall significance and a practical threshold in bytes per
request. A run fails when that verdict is ``growing`` or too few requests succeeded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import orjson
import yaml

from chatkeep.domain.trend import TrendResult, Verdict, analyze_trend
from chatkeep.soak.config import SoakConfig
from chatkeep.soak.recorder import LatencyPoint, MemorySample, Recorder

#: Bumped when a key changes meaning, so scripts reading old reports can tell.
REPORT_VERSION = 1

#: The verdict is judged on this last share of the run after warm-up (a cache that filled
#: early and then stopped is not a leak); the trend module's default, stated for the plot.
RECENT_FRACTION = 0.5

ReportFormat = Literal["json", "yaml"]


@dataclass(slots=True)
class SoakReport:
    """Everything one run measured. `as_dict` is what the report file holds."""

    config: SoakConfig
    target: str
    probe: str | None
    started_at: str
    """UTC, ISO 8601."""
    duration: float
    """Seconds from the first request sent to the last one finished."""
    requests: int
    successes: int
    errors: dict[str, int]
    error_examples: dict[str, str]
    latency_ms: dict[str, float | int] | None
    ttft_ms: dict[str, float | int] | None
    trend: TrendResult | None
    memory_samples: list[MemorySample] = field(default_factory=list)
    memory_peak: MemorySample | None = None
    uss: tuple[int | None, int | None, int | None] = (None, None, None)
    """USS at start, peak and end, when it was sampled."""
    latency_points: list[LatencyPoint] = field(default_factory=list)
    target_stats: dict[str, int] = field(default_factory=dict)
    probe_error: str | None = None
    stopped_early: bool = False
    """The run was ended by its stop event (Ctrl-C) before reaching a bound."""

    @property
    def success_rate(self) -> float:
        """Successes over requests (0.0 for a run that sent nothing)."""
        return self.successes / self.requests if self.requests else 0.0

    @property
    def throughput(self) -> float:
        """Requests finished per second of load."""
        return self.requests / self.duration if self.duration > 0 else 0.0

    @property
    def verdict(self) -> Verdict:
        """The leak verdict, ``unknown`` without memory samples."""
        return self.trend.verdict if self.trend is not None else "unknown"

    @property
    def slope_bytes_per_request(self) -> float | None:
        """Memory growth per request after warm-up, ``None`` without memory samples."""
        return self.trend.slope_per_request if self.trend is not None else None

    @property
    def failures(self) -> list[str]:
        """Why the run fails its gate; empty when it passes."""
        found: list[str] = []
        if self.success_rate < self.config.min_success:
            found.append(f"success rate {self.success_rate:.4f} is below {self.config.min_success}")
        if self.verdict == "growing":
            found.append(f"memory is growing by {self.slope_bytes_per_request:.0f} bytes/request")
        return found

    @property
    def passed(self) -> bool:
        """Whether the run may gate a CI job green."""
        return not self.failures

    def as_dict(self) -> dict[str, object]:
        """A JSON/YAML-able view: plain numbers, strings, lists and dicts."""
        config = self.config
        return _finite_dict(
            {
                "version": REPORT_VERSION,
                "target": {
                    "kind": config.target_kind,
                    "description": self.target,
                    "model": config.model,
                    "stream": config.stream,
                    **self.target_stats,
                },
                "load": {
                    "mode": "open" if config.open_loop else "closed",
                    "concurrency": config.concurrency,
                    "rate": config.rate,
                    "requests_limit": config.requests,
                    "duration_limit_s": config.duration,
                    "timeout_s": config.timeout,
                },
                "started_at": self.started_at,
                "stopped_early": self.stopped_early,
                "duration_s": round(self.duration, 6),
                "requests": self.requests,
                "successes": self.successes,
                "success_rate": round(self.success_rate, 6),
                "errors": dict(sorted(self.errors.items())),
                "error_examples": dict(sorted(self.error_examples.items())),
                "throughput_rps": round(self.throughput, 3),
                "latency_ms": self.latency_ms,
                "ttft_ms": self.ttft_ms,
                "memory": self._memory_dict(),
                "verdict": self.verdict,
                "slope_bytes_per_request": self.slope_bytes_per_request,
                "slope_bytes_per_hour": self.trend.slope_per_hour if self.trend else None,
                "min_success": config.min_success,
                "passed": self.passed,
                "failures": self.failures,
            }
        )

    def _memory_dict(self) -> dict[str, object] | None:
        if self.probe is None:
            return None
        samples = self.memory_samples
        first = samples[0] if samples else None
        last = samples[-1] if samples else None
        peak = self.memory_peak
        uss_start, uss_peak, uss_end = self.uss
        return {
            "probe": self.probe,
            "probe_error": self.probe_error,
            "samples": len(samples),
            "start_bytes": first.rss if first else None,
            "peak_bytes": peak.rss if peak else None,
            "end_bytes": last.rss if last else None,
            "growth_bytes": last.rss - first.rss if first and last else None,
            "uss_start_bytes": uss_start,
            "uss_peak_bytes": uss_peak,
            "uss_end_bytes": uss_end,
            "trend": self.trend.as_dict() if self.trend else None,
            "warmup_fraction": self.config.warmup_fraction,
            "leak_threshold_bytes_per_request": self.config.leak_threshold,
            "series": {
                "requests": [s.requests for s in samples],
                "seconds": [round(s.seconds, 4) for s in samples],
                "rss_bytes": [s.rss for s in samples],
                "uss_bytes": [s.uss for s in samples],
            },
        }


def memory_trend(samples: list[MemorySample], config: SoakConfig) -> TrendResult | None:
    """The leak test on RSS against requests completed; ``None`` without samples."""
    if not samples:
        return None
    return analyze_trend(
        [s.requests for s in samples],
        [s.rss for s in samples],
        [s.seconds for s in samples],
        warmup_fraction=config.warmup_fraction,
        min_slope_per_request=config.leak_threshold,
        recent_fraction=RECENT_FRACTION,
    )


def judged_from(samples: list[MemorySample], config: SoakConfig) -> float | None:
    """The request count from which samples are judged by the trend test."""
    if not samples:
        return None
    first = min(s.requests for s in samples)
    last = max(s.requests for s in samples)
    warm_end = first + config.warmup_fraction * (last - first)
    return warm_end + (1.0 - RECENT_FRACTION) * (last - warm_end)


def build_report(
    config: SoakConfig,
    recorder: Recorder,
    *,
    target: str,
    probe: str | None,
    started_at: str,
    duration: float,
    target_stats: dict[str, int] | None = None,
    probe_error: str | None = None,
    stopped_early: bool = False,
) -> SoakReport:
    """Turn what a `Recorder` saw into a report, running the trend test."""
    samples = recorder.memory.items()
    return SoakReport(
        config=config,
        target=target,
        probe=probe,
        started_at=started_at,
        duration=duration,
        requests=recorder.completed,
        successes=recorder.successes,
        errors=dict(recorder.errors),
        error_examples=dict(recorder.error_examples),
        latency_ms=recorder.latency.summary_ms(),
        ttft_ms=recorder.ttft.summary_ms(),
        trend=memory_trend(samples, config),
        memory_samples=samples,
        memory_peak=recorder.memory_peak,
        uss=(recorder.uss_first, recorder.uss_peak, recorder.uss_last),
        latency_points=recorder.latency_points.items(),
        target_stats=dict(target_stats or {}),
        probe_error=probe_error,
        stopped_early=stopped_early,
    )


def report_format(path: Path) -> ReportFormat:
    """``json`` or ``yaml`` from the file's extension; `ValueError` for anything else."""
    suffix = path.suffix.lower()
    if suffix == ".json":
        return "json"
    if suffix in (".yaml", ".yml"):
        return "yaml"
    raise ValueError(f"report file must end in .json, .yaml or .yml, not {path.name!r}")


def write_report(report: SoakReport, path: Path) -> None:
    """Write the report as JSON or YAML, chosen by the file's extension."""
    data = report.as_dict()
    if report_format(path) == "json":
        path.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n")
    else:
        path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


def _finite_dict(data: dict[str, object]) -> dict[str, object]:
    return {key: _finite(item) for key, item in data.items()}


def _finite(value: object) -> object:
    """Replace NaN and infinities (which JSON cannot hold) by ``None``, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value
