"""`LogHistogram`: latencies in a fixed number of logarithmic buckets.

A soak may run for hours, so latencies cannot be kept one by one. The buckets grow
geometrically by ``gamma = (1 + a) / (1 - a)`` (the DDSketch layout): every value in a bucket
is within a relative error ``a`` of the bucket's representative value, so any percentile is
known to within ``a`` (1 % by default) whatever the distribution, in a fixed ~1 100 counters
for the range 1 µs to 1 h. Count, sum, minimum and maximum are kept exactly.
"""

from __future__ import annotations

import math


class LogHistogram:
    """Counts of positive values (seconds) in geometric buckets; percentiles within ``a``."""

    __slots__ = (
        "_counts",
        "_gamma",
        "_log_gamma",
        "_offset",
        "count",
        "max_value",
        "maximum",
        "min_value",
        "minimum",
        "relative_accuracy",
        "total",
    )

    def __init__(
        self,
        relative_accuracy: float = 0.01,
        min_value: float = 1e-6,
        max_value: float = 3600.0,
    ) -> None:
        if not 0.0 < relative_accuracy < 1.0:
            raise ValueError("relative_accuracy must be in (0, 1)")
        if not 0.0 < min_value < max_value:
            raise ValueError("need 0 < min_value < max_value")
        self.relative_accuracy = relative_accuracy
        self.min_value = min_value
        self.max_value = max_value
        self._gamma = (1.0 + relative_accuracy) / (1.0 - relative_accuracy)
        self._log_gamma = math.log(self._gamma)
        self._offset = math.ceil(math.log(min_value) / self._log_gamma)
        size = math.ceil(math.log(max_value) / self._log_gamma) - self._offset + 1
        self._counts = [0] * size
        self.count = 0
        self.total = 0.0
        self.minimum = math.inf
        self.maximum = -math.inf

    @property
    def bucket_count(self) -> int:
        """The fixed number of counters: the histogram's memory bound."""
        return len(self._counts)

    def record(self, value: float) -> None:
        """Count one value. Values outside ``[min_value, max_value]`` land in the end buckets."""
        self.count += 1
        self.total += value
        if value < self.minimum:
            self.minimum = value
        if value > self.maximum:
            self.maximum = value
        clamped = min(max(value, self.min_value), self.max_value)
        index = math.ceil(math.log(clamped) / self._log_gamma) - self._offset
        # Rounding at an exact bucket edge can step one past either end.
        self._counts[min(max(index, 0), len(self._counts) - 1)] += 1

    def merge(self, other: LogHistogram) -> None:
        """Add another histogram's counts (it must have the same layout)."""
        if (other.relative_accuracy, other.min_value, other.max_value) != (
            self.relative_accuracy,
            self.min_value,
            self.max_value,
        ):
            raise ValueError("histograms with different layouts cannot be merged")
        for index, n in enumerate(other._counts):
            self._counts[index] += n
        self.count += other.count
        self.total += other.total
        self.minimum = min(self.minimum, other.minimum)
        self.maximum = max(self.maximum, other.maximum)

    def quantile(self, q: float) -> float | None:
        """The ``q``-quantile (nearest rank), within the relative accuracy; ``None`` if empty."""
        if not 0.0 <= q <= 1.0:
            raise ValueError("q must be in [0, 1]")
        if self.count == 0:
            return None
        if q == 0.0:
            return self.minimum
        if q == 1.0:
            return self.maximum
        rank = max(1, math.ceil(q * self.count))
        seen = 0
        for index, n in enumerate(self._counts):
            seen += n
            if seen >= rank:
                upper = self._gamma ** (index + self._offset)
                # The midpoint in relative terms of (upper / gamma, upper].
                estimate = 2.0 * upper / (self._gamma + 1.0)
                return min(max(estimate, self.minimum), self.maximum)
        return self.maximum

    @property
    def mean(self) -> float | None:
        """The exact mean, ``None`` if empty."""
        return self.total / self.count if self.count else None

    def summary_ms(self) -> dict[str, float | int] | None:
        """Count, mean, min, p50/p90/p99 and max in milliseconds; ``None`` if empty."""
        if self.count == 0:
            return None
        quantiles = {
            name: self.quantile(q) for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))
        }
        summary: dict[str, float | int] = {
            "count": self.count,
            "mean": _ms(self.total / self.count),
            "min": _ms(self.minimum),
        }
        for name, value in quantiles.items():
            summary[name] = _ms(value if value is not None else 0.0)
        summary["max"] = _ms(self.maximum)
        return summary


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 4)
