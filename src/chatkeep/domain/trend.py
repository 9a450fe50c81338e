"""Is memory leaking? A robust trend of memory against requests served.

The question an operator asks is "does each request leave memory behind?", so the
independent variable is the number of requests served, not time: an idle server that
keeps its memory is not leaking, and a busy one that grows by a few bytes per hour may
still be growing by kilobytes per request.

The statistics are chosen to survive what RSS series actually look like:

* **Theil-Sen slope** — the median of the slopes between pairs of samples. A few outliers
  (a burst of big requests, a transient buffer) move a least-squares fit a lot and the
  median hardly at all. For long windows the pairs are subsampled by lag, deterministically,
  so the work stays bounded (at most ``_MAX_PAIRS`` slopes).
* **Mann-Kendall test** — the S statistic (concordant minus discordant pairs) with the
  variance corrected for ties in both variables, and a normal approximation for the
  two-sided p-value. S is counted exactly in O(n log n) (Knight's merge-sort method).
* **Warm-up** — the first ``warmup_fraction`` of the request span is ignored: imports,
  connection pools and caches filling up are growth that is expected.
* **Recent part** — the verdict is judged on the last ``recent_fraction`` of what remains
  after warm-up. A cache that fills to its bound grows and then stops; over the whole
  window that reads as growth, but once the plateau has been reached the recent part is
  flat, and the verdict says ``stable``. The price is that a leak must persist over the
  recent part to be reported, which is exactly the leak worth reporting.
* **Practical significance** — a statistically certain slope of a few bytes per request is
  not a leak worth waking anyone for: ``growing`` needs both ``p < alpha`` and a slope of at
  least ``min_slope_per_request`` bytes per request (``shrinking`` symmetrically).
* **Resolution** — RSS does not move smoothly: CPython's object allocator maps arenas of
  1 MiB at a time, glibc grows its heap in steps and keeps what was freed, SQLite fills its
  page caches a page at a time. One such step inside a short judged span is a steep slope
  (1 MiB over 800 requests is 1.3 KB/request) that says nothing about leaking. So
  ``growing`` also needs the judged growth, slope times the span of requests judged, to reach
  ``min_growth_bytes``; the governor asks for 2 MiB, two arenas, the least growth that
  cannot be one step taken early. A fast leak passes it within a short span (4 KiB/request
  over 800 requests is 3.3 MiB), a slow one once the span is long enough (512 B/request
  needs about 4 000 requests judged); a step never does. ``shrinking`` mirrors it.
* **Retained baseline** — a garbage-collected heap saws up and down: it grows between
  collections and drops back. Inside each tooth memory rises, and a test on the raw series can
  find a significant upward slope although nothing is kept. So ``growing`` is also required
  of the *retained baseline*, the lowest memory seen from each sample to the end of the window
  (a suffix minimum): memory that was given back later never counts, memory that is never
  given back does. A flat-based sawtooth has a flat baseline; a leak raises it. ``shrinking``
  is confirmed the mirror way, on the suffix maximum.

Sample positions are requests (x) and memory values in bytes (y); times, when given,
only add a slope per hour over the same samples.
"""

from __future__ import annotations

import bisect
import itertools
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Literal

Verdict = Literal["stable", "growing", "shrinking", "unknown"]

#: Upper bound on the pairwise slopes a Theil-Sen estimate computes (and sorts).
_MAX_PAIRS = 20_000

_SECONDS_PER_HOUR = 3600.0


@dataclass(frozen=True, slots=True)
class TrendResult:
    """The verdict on a memory series, with the numbers behind it."""

    verdict: Verdict
    """``unknown`` when too few samples remain after warm-up."""
    slope_per_request: float
    """Bytes per request served (Theil-Sen over the judged samples)."""
    slope_per_hour: float | None
    """Bytes per hour (Theil-Sen against time) when times were given."""
    confidence: float
    """``1 - p_value``: how sure the Mann-Kendall test is that there is a trend at all."""
    p_value: float
    """Two-sided Mann-Kendall p-value."""
    samples: int
    """Samples judged: those after warm-up, in the recent part of the window."""

    def as_dict(self) -> dict[str, object]:
        """A JSON-able view, for ``/admin`` and soak reports."""
        return asdict(self)


def analyze_trend(
    requests: Sequence[float],
    values: Sequence[float],
    times: Sequence[float] | None = None,
    *,
    warmup_fraction: float = 0.2,
    min_samples: int = 8,
    alpha: float = 0.01,
    min_slope_per_request: float = 256.0,
    recent_fraction: float = 0.5,
    min_growth_bytes: float = 0.0,
) -> TrendResult:
    """Judge whether ``values`` (bytes) grow with ``requests`` (requests served so far).

    ``times`` (seconds, any origin) add a slope per hour. ``min_growth_bytes`` (0: off) is
    the least growth over the judged span that may read ``growing`` (see Resolution above).
    Samples need not be sorted; they are ordered by requests (then time). Warm-up and the
    recent part are fractions of the *request span*, not of the sample count, so that
    samples taken while idle (many at the same request count) do not stretch or shrink them.
    """
    _validate(requests, values, times, warmup_fraction, min_samples, alpha, recent_fraction)
    if not min_growth_bytes >= 0.0:
        raise ValueError("min_growth_bytes must not be negative")
    order = sorted(
        range(len(requests)),
        key=lambda i: (requests[i], times[i] if times is not None else 0.0, i),
    )
    xs = [float(requests[i]) for i in order]
    ys = [float(values[i]) for i in order]
    ts = [float(times[i]) for i in order] if times is not None else None

    start = _judged_start(xs, warmup_fraction, recent_fraction)
    xs, ys = xs[start:], ys[start:]
    ts = ts[start:] if ts is not None else None
    n = len(xs)

    if n < min_samples or xs[-1] == xs[0]:
        slope = theil_sen_slope(xs, ys) if n >= 2 else 0.0
        return TrendResult("unknown", slope, _per_hour(ts, ys), 0.0, 1.0, n)

    slope = theil_sen_slope(xs, ys)
    p_value = mann_kendall_p(xs, ys)
    # The least slope worth reporting: practically significant, and beyond one step of RSS.
    least = max(min_slope_per_request, min_growth_bytes / (xs[-1] - xs[0]))
    verdict: Verdict = "stable"
    if p_value < alpha and slope >= least:
        baseline = theil_sen_slope(xs, _suffix_extreme(ys, min))
        if baseline >= least:
            verdict = "growing"
    elif p_value < alpha and slope <= -least:
        ceiling = theil_sen_slope(xs, _suffix_extreme(ys, max))
        if ceiling <= -least:
            verdict = "shrinking"
    return TrendResult(verdict, slope, _per_hour(ts, ys), 1.0 - p_value, p_value, n)


def theil_sen_slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """The median slope between pairs of points with different x (0.0 when there are none).

    ``xs`` must be sorted. With more than ``_MAX_PAIRS`` pairs, each point is paired with
    the points a fixed set of lags ahead, lags spread evenly over the whole range: every lag
    keeps the share of pairs it has in the full estimate, so the subsample is stratified
    rather than biased to short or long distances, and the same input gives the same answer.
    """
    n = len(xs)
    if n < 2:
        return 0.0
    if n * (n - 1) // 2 <= _MAX_PAIRS:
        lags: Sequence[int] = range(1, n)
    else:
        count = max(1, _MAX_PAIRS // n)
        lags = sorted({max(1, round(k * (n - 1) / count)) for k in range(1, count + 1)})
    slopes = [
        (ys[i + lag] - ys[i]) / (xs[i + lag] - xs[i])
        for lag in lags
        for i in range(n - lag)
        if xs[i + lag] != xs[i]
    ]
    return statistics.median(slopes) if slopes else 0.0


def mann_kendall_p(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Two-sided p-value that ``ys`` has a monotonic trend in ``xs`` (``xs`` sorted).

    Uses Kendall's S with the variance corrected for ties in x (samples at the same
    request count) and in y, a continuity correction, and the normal approximation.
    """
    n = len(xs)
    if n < 3:
        return 1.0
    s = kendall_s(xs, ys)
    variance = _s_variance(n, _tie_sizes(xs), _tie_sizes(sorted(ys)))
    if variance <= 0.0 or s == 0:
        return 1.0
    z = (s - 1 if s > 0 else s + 1) / math.sqrt(variance)
    return min(1.0, math.erfc(abs(z) / math.sqrt(2.0)))


def kendall_s(xs: Sequence[float], ys: Sequence[float]) -> int:
    """Concordant minus discordant pairs, in O(n log n).

    Knight's method: with points sorted by (x, y), every discordant pair is an inversion
    of the y sequence, counted while merge-sorting it; tied pairs come from group sizes.
    """
    n = len(xs)
    points = sorted(zip(xs, ys, strict=True))
    tied_x = _pairs_in_groups(_tie_sizes([x for x, _ in points]))
    tied_xy = _pairs_in_groups(_tie_sizes(points))
    sorted_ys, discordant = _sort_counting_inversions([y for _, y in points])
    tied_y = _pairs_in_groups(_tie_sizes(sorted_ys))
    total = n * (n - 1) // 2
    return total - tied_x - tied_y + tied_xy - 2 * discordant


def _judged_start(xs: Sequence[float], warmup_fraction: float, recent_fraction: float) -> int:
    """Index of the first sample judged: past warm-up, inside the recent part."""
    if not xs:
        return 0
    warm_end = xs[0] + warmup_fraction * (xs[-1] - xs[0])
    cutoff = warm_end + (1.0 - recent_fraction) * (xs[-1] - warm_end)
    return bisect.bisect_left(xs, cutoff)


def _per_hour(ts: Sequence[float] | None, ys: Sequence[float]) -> float | None:
    if ts is None:
        return None
    pairs = sorted(zip(ts, ys, strict=True))
    return theil_sen_slope([t for t, _ in pairs], [y for _, y in pairs]) * _SECONDS_PER_HOUR


def _suffix_extreme(ys: Sequence[float], pick: Callable[[float, float], float]) -> list[float]:
    """For each sample, the lowest (``min``) or highest (``max``) value from it to the end."""
    out = list(ys)
    for i in range(len(out) - 2, -1, -1):
        out[i] = pick(out[i], out[i + 1])
    return out


def _tie_sizes(sorted_items: Sequence[object]) -> list[int]:
    """Sizes of the runs of equal items (only runs longer than one) in a sorted sequence."""
    sizes: list[int] = []
    run = 1
    for previous, current in itertools.pairwise(sorted_items):
        if current == previous:
            run += 1
        else:
            if run > 1:
                sizes.append(run)
            run = 1
    if run > 1:
        sizes.append(run)
    return sizes


def _pairs_in_groups(sizes: Sequence[int]) -> int:
    return sum(t * (t - 1) // 2 for t in sizes)


def _s_variance(n: int, x_ties: Sequence[int], y_ties: Sequence[int]) -> float:
    """Variance of Kendall's S under independence, with ties in both variables."""
    base = n * (n - 1) * (2 * n + 5)
    base -= sum(t * (t - 1) * (2 * t + 5) for t in x_ties)
    base -= sum(u * (u - 1) * (2 * u + 5) for u in y_ties)
    pairs_x = sum(t * (t - 1) for t in x_ties)
    pairs_y = sum(u * (u - 1) for u in y_ties)
    triples_x = sum(t * (t - 1) * (t - 2) for t in x_ties)
    triples_y = sum(u * (u - 1) * (u - 2) for u in y_ties)
    return (
        base / 18.0
        + pairs_x * pairs_y / (2.0 * n * (n - 1))
        + triples_x * triples_y / (9.0 * n * (n - 1) * (n - 2))
    )


def _sort_counting_inversions(items: list[float]) -> tuple[list[float], int]:
    """Bottom-up merge sort; returns the sorted list and the count of strict inversions."""
    current = list(items)
    n = len(current)
    inversions = 0
    width = 1
    while width < n:
        merged: list[float] = []
        for lo in range(0, n, 2 * width):
            left = current[lo : lo + width]
            right = current[lo + width : lo + 2 * width]
            i = j = 0
            while i < len(left) and j < len(right):
                if right[j] < left[i]:
                    # right[j] jumps ahead of every left item not yet placed.
                    inversions += len(left) - i
                    merged.append(right[j])
                    j += 1
                else:
                    merged.append(left[i])
                    i += 1
            merged.extend(left[i:])
            merged.extend(right[j:])
        current = merged
        width *= 2
    return current, inversions


def _validate(
    requests: Sequence[float],
    values: Sequence[float],
    times: Sequence[float] | None,
    warmup_fraction: float,
    min_samples: int,
    alpha: float,
    recent_fraction: float,
) -> None:
    if len(requests) != len(values):
        raise ValueError("requests and values must have the same length")
    if times is not None and len(times) != len(values):
        raise ValueError("times and values must have the same length")
    if not 0.0 <= warmup_fraction < 1.0:
        raise ValueError("warmup_fraction must be in [0, 1)")
    if not 0.0 < recent_fraction <= 1.0:
        raise ValueError("recent_fraction must be in (0, 1]")
    if min_samples < 3:
        raise ValueError("min_samples must be at least 3")
    if not 0.0 < alpha < 1.0:
        raise ValueError("alpha must be in (0, 1)")
    for sequence in (requests, values, times or ()):
        if not all(math.isfinite(v) for v in sequence):
            raise ValueError("samples must be finite numbers")
