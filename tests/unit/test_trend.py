"""The leak verdict on synthetic memory series."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any

import pytest

from chatkeep.domain.trend import (
    TrendResult,
    analyze_trend,
    kendall_s,
    mann_kendall_p,
    theil_sen_slope,
)

KiB = 1024
MiB = 1024 * KiB
BASE = 120 * MiB
NOISE = 200 * KiB


def series(
    shape: Callable[[int], float],
    *,
    samples: int = 500,
    every: int = 10,
    noise: float = NOISE,
    seed: int = 7,
) -> tuple[list[int], list[float]]:
    """Memory sampled every ``every`` requests, with uniform RSS noise of +-``noise``."""
    rng = random.Random(seed)
    requests = [i * every for i in range(samples)]
    return requests, [shape(r) + rng.uniform(-noise, noise) for r in requests]


def verdict(
    shape: Callable[[int], float],
    *,
    samples: int = 500,
    every: int = 10,
    noise: float = NOISE,
    seed: int = 7,
    warmup_fraction: float = 0.2,
    recent_fraction: float = 0.5,
) -> TrendResult:
    requests, values = series(shape, samples=samples, every=every, noise=noise, seed=seed)
    return analyze_trend(
        requests, values, warmup_fraction=warmup_fraction, recent_fraction=recent_fraction
    )


SEEDS = [1, 2, 3, 4, 5]


@pytest.mark.parametrize("seed", SEEDS)
def test_flat_series_is_stable(seed: int) -> None:
    result = verdict(lambda r: BASE, seed=seed)
    assert result.verdict == "stable"
    assert abs(result.slope_per_request) < 100


@pytest.mark.parametrize("seed", SEEDS)
def test_cache_filling_to_its_bound_is_stable_once_the_plateau_is_reached(seed: int) -> None:
    # 60 MiB of cache filling over the first ~1500 of 5000 requests.
    result = verdict(lambda r: BASE + 60 * MiB * (1 - math.exp(-r / 300)), seed=seed)
    assert result.verdict == "stable"
    assert abs(result.slope_per_request) < 256


def test_plateau_still_filling_in_the_recent_part_reads_growing() -> None:
    # The same cache, but it only stops growing at the very end of the window.
    result = verdict(lambda r: BASE + 12 * KiB * min(r, 4800))
    assert result.verdict == "growing"


@pytest.mark.parametrize("seed", SEEDS)
def test_linear_leak_is_growing_with_its_slope(seed: int) -> None:
    result = verdict(lambda r: BASE + 4 * KiB * r, noise=0, seed=seed)
    assert result.verdict == "growing"
    assert result.slope_per_request == pytest.approx(4 * KiB)
    assert result.confidence > 0.99


@pytest.mark.parametrize("seed", SEEDS)
def test_noisy_4kib_leak_is_growing_within_3000_requests(seed: int) -> None:
    # One sample every 100 requests, 3000 requests in all, +-200 KiB of RSS noise.
    result = verdict(lambda r: BASE + 4 * KiB * r, samples=30, every=100, seed=seed)
    assert result.verdict == "growing"
    assert result.slope_per_request == pytest.approx(4 * KiB, rel=0.25)


@pytest.mark.parametrize("seed", SEEDS)
def test_a_few_bytes_per_request_is_stable_even_when_significant(seed: int) -> None:
    result = verdict(lambda r: BASE + 40 * r, noise=1 * KiB, seed=seed)
    assert result.p_value < 0.01
    assert result.verdict == "stable"


def test_step_before_the_recent_part_is_stable() -> None:
    # A one-time 30 MiB allocation (a pool created on first use) at request 1800 of 5000.
    result = verdict(lambda r: BASE + (30 * MiB if r >= 1800 else 0))
    assert result.verdict == "stable"


@pytest.mark.parametrize("seed", SEEDS)
def test_gc_sawtooth_with_flat_baseline_is_stable(seed: int) -> None:
    # The heap climbs 8 KiB per request and a collection drops it back every 400 requests.
    result = verdict(lambda r: BASE + 8 * KiB * (r % 400), seed=seed)
    assert result.verdict == "stable"


def test_gc_sawtooth_on_a_rising_baseline_is_growing() -> None:
    result = verdict(lambda r: BASE + 8 * KiB * (r % 400) + 2 * KiB * r)
    assert result.verdict == "growing"


@pytest.mark.parametrize("seed", SEEDS)
def test_shrinking_series(seed: int) -> None:
    result = verdict(lambda r: BASE + 40 * MiB - 4 * KiB * r, seed=seed)
    assert result.verdict == "shrinking"
    assert result.slope_per_request == pytest.approx(-4 * KiB, rel=0.1)


def test_too_few_samples_after_warm_up_is_unknown() -> None:
    # 12 samples: warm-up and the recent part leave fewer than min_samples to judge.
    result = verdict(lambda r: BASE + 4 * KiB * r, samples=12, every=100)
    assert result.verdict == "unknown"
    assert result.samples < 8
    assert result.p_value == 1.0
    assert result.confidence == 0.0


def test_no_samples_is_unknown() -> None:
    result = analyze_trend([], [], [])
    assert result.verdict == "unknown"
    assert result.samples == 0


def test_samples_all_at_the_same_request_count_are_unknown() -> None:
    # An idle server: samples by time only.
    result = analyze_trend([500] * 50, [BASE + i * MiB for i in range(50)])
    assert result.verdict == "unknown"


def test_idle_samples_between_requests_do_not_hide_a_leak() -> None:
    # Ten samples at each request count, as a time-based sampler takes them while idle.
    requests = [100 * (i // 10) for i in range(600)]
    values = [BASE + 4 * KiB * r + (i % 10) * KiB for i, r in enumerate(requests)]
    result = analyze_trend(requests, values)
    assert result.verdict == "growing"
    assert result.slope_per_request == pytest.approx(4 * KiB, rel=0.05)


def test_times_give_a_slope_per_hour() -> None:
    requests, values = series(lambda r: BASE + 4 * KiB * r, noise=0)
    times = [1000.0 + r / 5 for r in requests]  # 5 requests per second
    result = analyze_trend(requests, values, times)
    assert result.slope_per_hour == pytest.approx(4 * KiB * 5 * 3600)
    assert analyze_trend(requests, values).slope_per_hour is None


def test_unsorted_samples_are_ordered_by_requests() -> None:
    requests, values = series(lambda r: BASE + 4 * KiB * r, seed=3)
    pairs = list(zip(requests, values, strict=True))
    random.Random(0).shuffle(pairs)
    shuffled = analyze_trend([r for r, _ in pairs], [v for _, v in pairs])
    assert shuffled == analyze_trend(requests, values)


def test_warm_up_is_ignored() -> None:
    # All growth happens in the first 40% of the requests; with a warm-up that covers it the
    # series is stable, with no warm-up and the whole window judged the growth shows.
    def shape(r: int) -> float:
        return BASE + 20 * KiB * min(r, 2000)

    assert verdict(shape, warmup_fraction=0.45, recent_fraction=1.0).verdict == "stable"
    assert verdict(shape, warmup_fraction=0.0, recent_fraction=1.0).verdict == "growing"


def test_long_windows_stay_bounded_and_deterministic() -> None:
    requests, values = series(lambda r: BASE + 4 * KiB * r, samples=20_000, every=1)
    first = analyze_trend(requests, values)
    assert first.verdict == "growing"
    assert first.slope_per_request == pytest.approx(4 * KiB, rel=0.05)
    assert analyze_trend(requests, values) == first


def test_as_dict_is_json_ready() -> None:
    result = verdict(lambda r: BASE)
    assert result.as_dict() == {
        "verdict": result.verdict,
        "slope_per_request": result.slope_per_request,
        "slope_per_hour": None,
        "confidence": result.confidence,
        "p_value": result.p_value,
        "samples": result.samples,
    }


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"warmup_fraction": 1.0}, "warmup_fraction"),
        ({"recent_fraction": 0.0}, "recent_fraction"),
        ({"min_samples": 2}, "min_samples"),
        ({"alpha": 0.0}, "alpha"),
        ({"min_growth_bytes": -1.0}, "min_growth_bytes"),
    ],
)
def test_bad_options_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        analyze_trend([1, 2, 3], [1, 2, 3], **kwargs)


def test_mismatched_or_non_finite_samples_are_refused() -> None:
    with pytest.raises(ValueError, match="same length"):
        analyze_trend([1, 2], [1])
    with pytest.raises(ValueError, match="same length"):
        analyze_trend([1, 2], [1, 2], [0.0])
    with pytest.raises(ValueError, match="finite"):
        analyze_trend([1, 2], [1, math.nan])


def test_kendall_s_matches_the_pairwise_definition_with_ties() -> None:
    rng = random.Random(11)
    for _ in range(200):
        n = rng.randint(2, 30)
        xs = sorted(rng.randint(0, 8) for _ in range(n))
        ys = [float(rng.randint(0, 4)) for _ in range(n)]
        expected = sum(
            _sign(xs[j] - xs[i]) * _sign(ys[j] - ys[i]) for i in range(n) for j in range(i + 1, n)
        )
        assert kendall_s(xs, ys) == expected


def test_mann_kendall_p_without_ties_matches_the_textbook_value() -> None:
    # n = 10, strictly increasing: S = 45, Var(S) = 10*9*25/18 = 125, z = 44/sqrt(125).
    p = mann_kendall_p(list(range(10)), list(range(10)))
    assert p == pytest.approx(math.erfc(44 / math.sqrt(125) / math.sqrt(2)))
    assert mann_kendall_p([0, 1, 2], [5, 5, 5]) == 1.0


def test_theil_sen_ignores_outliers() -> None:
    xs = list(range(20))
    ys = [3.0 * x for x in xs]
    ys[5] = 1e9
    ys[15] = -1e9
    assert theil_sen_slope(xs, ys) == pytest.approx(3.0)
    assert theil_sen_slope([1, 1, 1], [1, 2, 3]) == 0.0


def _sign(value: float) -> int:
    return (value > 0) - (value < 0)


# -- resolution: RSS moves in steps -----------------------------------------------------

ARENA = 1 * MiB
RESOLUTION = 2 * ARENA


def one_step(at: int, noise: float, seed: int) -> tuple[list[int], list[float]]:
    """Flat memory sampled every 25 requests up to 3000, one arena mapped at ``at``."""
    rng = random.Random(seed)
    requests = list(range(0, 3001, 25))
    return requests, [
        BASE + (ARENA if r >= at else 0) + rng.uniform(-noise, noise) for r in requests
    ]


@pytest.mark.parametrize("at", [1500, 2000, 2300, 2400, 2500, 2800])
@pytest.mark.parametrize("seed", SEEDS)
def test_one_arena_step_is_not_a_leak(at: int, seed: int) -> None:
    requests, values = one_step(at, 20 * KiB, seed)
    result = analyze_trend(requests, values, min_growth_bytes=RESOLUTION)
    assert result.verdict == "stable", result


def test_without_the_resolution_one_arena_step_reads_growing() -> None:
    # What the resolution rule is for: the same step mid-span, judged on slope and p alone,
    # reads as ~1 KB/request over the 1 200 requests judged.
    requests, values = one_step(2400, 20 * KiB, 1)
    assert analyze_trend(requests, values).verdict == "growing"


@pytest.mark.parametrize("seed", SEEDS)
def test_a_fast_leak_clears_the_resolution_in_a_short_span(seed: int) -> None:
    # 4 KiB a request, sampled every 100 requests up to 3000, RSS in whole arenas.
    rng = random.Random(seed)
    requests = list(range(1000, 3001, 100))
    values = [
        BASE + -(-(4 * KiB * r + rng.uniform(0, 200 * KiB)) // ARENA) * ARENA for r in requests
    ]
    assert analyze_trend(requests, values, min_growth_bytes=RESOLUTION).verdict == "growing"


@pytest.mark.parametrize("seed", SEEDS)
def test_a_slow_leak_reads_growing_once_its_growth_clears_the_resolution(seed: int) -> None:
    def leak(r: int) -> float:
        return BASE + 512 * r

    # 2 000 requests judged of 5 000: 1 MB grown, not yet told from a step.
    requests, values = series(leak, samples=50, every=100, noise=50 * KiB, seed=seed)
    early = analyze_trend(requests, values, min_growth_bytes=RESOLUTION)
    assert early.verdict == "stable"
    # 8 000 judged of 20 000: 4 MB, a leak.
    requests, values = series(leak, samples=200, every=100, noise=50 * KiB, seed=seed)
    late = analyze_trend(requests, values, min_growth_bytes=RESOLUTION)
    assert late.verdict == "growing"
    assert late.slope_per_request == pytest.approx(512, rel=0.1)
