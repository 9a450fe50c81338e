"""How a provider pool picks one backend among those it may use now.

* ``least_inflight`` (default): the fewest requests running; ties go round the
  candidates in turn, so an idle pool still spreads its traffic.
* ``latency``: the lowest EWMA of time to first token, times the requests running plus
  one (a fast backend that is already busy waits its turn); a backend without any
  measurement yet scores 0, so each is tried.
* ``weighted``: smooth weighted round robin (nginx's): over any run of requests each
  backend gets its weight's share, interleaved rather than in bursts. Deterministic,
  so a test can count.
* ``ordered``: the first candidate in configuration order: a primary and fallbacks.

Candidates arrive already filtered (breaker, in-flight bound, tried in this reply);
choosing costs one pass over them.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Literal, Protocol, TypeVar

Balancing = Literal["least_inflight", "latency", "weighted", "ordered"]


class Balanced(Protocol):
    """What balancing reads of a backend."""

    @property
    def name(self) -> str: ...

    @property
    def weight(self) -> float: ...

    @property
    def inflight(self) -> int: ...

    @property
    def ewma_ttft(self) -> float | None: ...


B = TypeVar("B", bound=Balanced)


class Balancer:
    """Chooses among candidates by one strategy; holds only that strategy's small state."""

    def __init__(self, strategy: Balancing) -> None:
        self.strategy = strategy
        self._turn = itertools.count()
        #: Smooth weighted round robin's running scores, by backend name (bounded by config).
        self._current: dict[str, float] = {}

    def choose(self, candidates: Sequence[B]) -> B:
        """One of ``candidates`` (at least one)."""
        if len(candidates) == 1:
            return candidates[0]
        strategy = self.strategy
        if strategy == "ordered":
            return candidates[0]
        if strategy == "weighted":
            return self._weighted(candidates)
        start = next(self._turn) % len(candidates)
        rotated = [*candidates[start:], *candidates[:start]]
        if strategy == "latency":
            return min(rotated, key=lambda b: (b.ewma_ttft or 0.0) * (b.inflight + 1))
        return min(rotated, key=lambda b: b.inflight)

    def _weighted(self, candidates: Sequence[B]) -> B:
        current = self._current
        total = 0.0
        best: B | None = None
        best_score = 0.0
        for backend in candidates:
            score = current.get(backend.name, 0.0) + backend.weight
            current[backend.name] = score
            total += backend.weight
            if best is None or score > best_score:
                best, best_score = backend, score
        assert best is not None
        current[best.name] = best_score - total
        return best
