"""The soak report's statistics on synthetic samples: verdicts, percentiles, errors, files."""

from __future__ import annotations

import itertools
import json
import math
import random
from collections.abc import Callable
from pathlib import Path

import aiohttp
import orjson
import pytest
import yaml

from chatkeep.soak.config import SoakConfig
from chatkeep.soak.histogram import LogHistogram
from chatkeep.soak.probe import RSS_GAUGES, MemoryReading, parse_gauges
from chatkeep.soak.recorder import MAX_ERROR_CLASSES, Recorder
from chatkeep.soak.report import SoakReport, build_report, report_format, write_report
from chatkeep.soak.series import ThinnedSeries
from chatkeep.soak.targets import Outcome, StreamFailed, error_class

MiB = 1024 * 1024
CONFIG = SoakConfig(url="http://soak.invalid", requests=10_000)


def synthetic_report(
    leak_per_request: float,
    *,
    requests: int = 10_000,
    every: int = 50,
    noise: float = 256 * 1024,
    errors: int = 0,
    seed: int = 3,
) -> SoakReport:
    """A run of ``requests`` requests with RSS sampled every ``every`` of them."""
    rng = random.Random(seed)
    recorder = Recorder()
    recorder.record_memory(0.0, MemoryReading(80 * MiB))
    for number in range(1, requests + 1):
        if number <= errors:
            recorder.record(Outcome(0.001, "http_503", detail="overloaded"))
        else:
            recorder.record(Outcome(0.010 + 0.001 * (number % 10), ttft=0.002))
        if number % every == 0:
            rss = 100 * MiB + leak_per_request * number + rng.uniform(-noise, noise)
            recorder.record_memory(number / 1000.0, MemoryReading(int(rss), None))
    return build_report(
        CONFIG,
        recorder,
        target="synthetic",
        probe="synthetic",
        started_at="2024-01-01T00:00:00+00:00",
        duration=requests / 1000.0,
    )


def test_flat_memory_reads_stable() -> None:
    report = synthetic_report(0.0)
    assert report.verdict == "stable"
    assert report.slope_bytes_per_request is not None
    assert abs(report.slope_bytes_per_request) < 256
    assert report.passed


def test_leaking_memory_reads_growing_and_fails() -> None:
    report = synthetic_report(2048.0)
    assert report.verdict == "growing"
    assert report.slope_bytes_per_request == pytest.approx(2048.0, rel=0.1)
    assert not report.passed
    assert any("growing" in reason for reason in report.failures)


def test_a_cache_filling_during_warmup_is_not_a_leak() -> None:
    # Fast growth during the first tenth of the run (pools and caches filling), flat after.
    recorder = Recorder()
    for number in range(0, 10_001, 50):
        rss = 100 * MiB + min(number, 1_000) * 4096
        recorder.record_memory(number / 1000, MemoryReading(rss))
        recorder.completed = number
    report = build_report(CONFIG, recorder, target="t", probe="p", started_at="", duration=10.0)
    assert report.verdict == "stable"


def test_memory_start_peak_end() -> None:
    report = synthetic_report(0.0, noise=0.0)
    data = report.as_dict()
    memory = data["memory"]
    assert isinstance(memory, dict)
    assert memory["start_bytes"] == 80 * MiB
    assert memory["end_bytes"] == 100 * MiB
    assert memory["peak_bytes"] == 100 * MiB
    assert memory["growth_bytes"] == 20 * MiB
    assert len(memory["series"]["rss_bytes"]) == memory["samples"]


def test_without_a_probe_the_verdict_is_unknown_and_does_not_fail() -> None:
    recorder = Recorder()
    for _ in range(100):
        recorder.record(Outcome(0.01))
    report = build_report(CONFIG, recorder, target="t", probe=None, started_at="", duration=1.0)
    assert report.verdict == "unknown"
    assert report.slope_bytes_per_request is None
    assert report.as_dict()["memory"] is None
    assert report.passed


def test_success_rate_below_the_minimum_fails() -> None:
    report = synthetic_report(0.0, requests=1_000, every=10, errors=20)
    assert report.successes == 980
    assert report.success_rate == pytest.approx(0.98)
    assert report.errors == {"http_503": 20}
    assert report.error_examples == {"http_503": "overloaded"}
    assert not report.passed
    assert any("success rate" in reason for reason in report.failures)


@pytest.mark.parametrize("shape", ["lognormal", "uniform", "bimodal"])
def test_histogram_percentiles_are_within_one_percent(shape: str) -> None:
    rng = random.Random(11)
    draw: Callable[[], float] = {
        "lognormal": lambda: rng.lognormvariate(-4.0, 1.0),
        "uniform": lambda: rng.uniform(0.001, 0.5),
        "bimodal": lambda: rng.choice((0.002, 0.2)) * rng.uniform(0.9, 1.1),
    }[shape]
    values = [draw() for _ in range(20_000)]
    histogram = LogHistogram()
    for value in values:
        histogram.record(value)
    ordered = sorted(values)
    for q in (0.5, 0.9, 0.99, 0.999):
        exact = ordered[math.ceil(q * len(ordered)) - 1]
        estimate = histogram.quantile(q)
        assert estimate is not None
        assert estimate == pytest.approx(exact, rel=0.01)
    assert histogram.quantile(1.0) == max(values)
    assert histogram.quantile(0.0) == min(values)
    assert histogram.mean == pytest.approx(sum(values) / len(values))


def test_histogram_memory_is_fixed_and_extremes_are_clamped() -> None:
    histogram = LogHistogram()
    buckets = histogram.bucket_count
    for value in (1e-9, 1e-6, 5.0, 7200.0):
        histogram.record(value)
    assert histogram.bucket_count == buckets < 1_200
    assert histogram.quantile(1.0) == 7200.0
    assert LogHistogram().quantile(0.5) is None
    assert LogHistogram().summary_ms() is None


def test_histograms_merge() -> None:
    left, right = LogHistogram(), LogHistogram()
    left.record(0.010)
    right.record(0.020)
    left.merge(right)
    assert left.count == 2
    assert left.maximum == 0.020
    with pytest.raises(ValueError):
        left.merge(LogHistogram(relative_accuracy=0.02))


def test_thinned_series_stays_bounded_and_even() -> None:
    series: ThinnedSeries[int] = ThinnedSeries(64)
    for item in range(10_000):
        series.append(item)
        assert len(series) < 64
    kept = series.items()
    assert kept[0] == 0
    assert kept[-1] == 9_999
    # All but the last item sit on the stride; the last is the most recent, kept anyway.
    gaps = {b - a for a, b in itertools.pairwise(kept[:-1])}
    assert gaps == {series.stride}


def test_error_classes() -> None:
    assert error_class(TimeoutError()) == "timeout"
    assert error_class(aiohttp.ServerTimeoutError()) == "timeout"
    assert error_class(ConnectionResetError()) == "connect"
    assert error_class(aiohttp.ServerDisconnectedError()) == "disconnected"
    assert error_class(aiohttp.ClientPayloadError("cut")) == "stream_error"
    assert error_class(StreamFailed("no done")) == "stream_error"
    assert error_class(orjson.JSONDecodeError("bad", "x", 0)) == "protocol"
    assert error_class(RuntimeError("?")) == "other"


def test_error_classes_are_capped() -> None:
    recorder = Recorder()
    for status in range(MAX_ERROR_CLASSES + 10):
        recorder.record(Outcome(0.001, f"http_{status}"))
    assert len(recorder.errors) == MAX_ERROR_CLASSES + 1
    assert recorder.errors["other"] == 10
    assert recorder.error_count == MAX_ERROR_CLASSES + 10


def test_json_and_yaml_reports(tmp_path: Path) -> None:
    report = synthetic_report(2048.0, errors=5)
    for name in ("soak.json", "soak.yaml", "soak.yml"):
        path = tmp_path / name
        write_report(report, path)
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if name.endswith(".json") else yaml.safe_load(text)
        assert data["requests"] == 10_000
        assert data["successes"] == 9_995
        assert data["errors"] == {"http_503": 5}
        assert data["verdict"] == "growing"
        assert data["slope_bytes_per_request"] == pytest.approx(2048.0, rel=0.1)
        assert set(data["latency_ms"]) >= {"p50", "p90", "p99", "max"}
        assert data["ttft_ms"]["p50"] == pytest.approx(2.0, rel=0.01)
        assert data["passed"] is False


def test_report_format_by_extension() -> None:
    assert report_format(Path("a.JSON")) == "json"
    assert report_format(Path("a.yml")) == "yaml"
    with pytest.raises(ValueError, match=r"\.json"):
        report_format(Path("a.txt"))


def test_non_finite_numbers_become_null(tmp_path: Path) -> None:
    report = synthetic_report(0.0, requests=100, every=10)
    report.duration = 0.0  # throughput is then 0, but the trend keeps its numbers
    recorder_like = report.as_dict()
    assert recorder_like["throughput_rps"] == 0.0
    report.latency_ms = {"p50": math.nan, "max": math.inf}
    path = tmp_path / "r.json"
    write_report(report, path)
    assert json.loads(path.read_text())["latency_ms"] == {"p50": None, "max": None}


def test_prometheus_gauges() -> None:
    text = (
        "# TYPE process_resident_memory_bytes gauge\n"
        "process_resident_memory_bytes 1.5e+07\n"
        'chatkeep_process_resident_memory_bytes{worker="a b"} 100\n'
        'chatkeep_process_resident_memory_bytes{worker="c"} 200 1700000000\n'
        "chatkeep_process_resident_memory_bytes_total 5\n"
    )
    assert parse_gauges(text, RSS_GAUGES) == 300.0
    assert parse_gauges(text, ("process_resident_memory_bytes",)) == 1.5e7
    assert parse_gauges("nothing 1\n", RSS_GAUGES) is None


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"requests": 1}, "exactly one target"),
        ({"url": "http://a", "openai_url": "http://b", "requests": 1}, "exactly one target"),
        ({"openai_url": "http://b", "requests": 1}, "needs a model"),
        ({"url": "http://a"}, "bound the run"),
        ({"url": "http://a", "requests": 1, "pid": 1, "metrics_url": "http://m"}, "not both"),
    ],
)
def test_config_refuses_incomplete_runs(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SoakConfig(**options)  # type: ignore[arg-type]
