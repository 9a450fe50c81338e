"""Hedged requests: when to send a second copy of a request, and how many may be sent.

A reply whose first token is late (``hedge_after_ms``, or with ``"adaptive"`` twice the
primary backend's own 90th percentile) is started again on another healthy backend; the
first of the two to send a token wins and the other is cancelled, its connection
closed (`chatkeep.providers.pool`).

Why twice the p90. A hedge is worth its cost only on a reply that is slow for a reason
another backend does not share (a long queue, a cold replica, a GC pause); the budget
pays for at most ``hedge_budget`` of them (5%), so the delay must let almost no normal
reply pass, or normal replies spend the budget before the slow ones come. The old delay,
the p95, failed both ways: by definition 5% of normal replies pass their own p95, the
whole default budget (at a 5% slow share, 300 hedges sent and 183 refused, p99
unchanged). The percentile is learnt from every attempt (`chatkeep.providers.health`),
slow ones included, so it must lie below the slow share, or it lands among the slow
replies and the delay with it: a p95 or p99 does whenever 5% or 1% of attempts are slow,
which is exactly when hedging is wanted. The p90 stays among the normal replies until
one attempt in ten is slow, twice the default budget (in a 100-attempt window at a 5%
slow share, more than 10 slow ones come one time in a hundred). Twice it clears the
normal replies' own spread: for times to first token spread like a log-normal, fewer
than 2 in 10,000 pass twice their p90 at sigma 0.3 and 4 in 1,000 at sigma 0.5, against
5 in 100 for the p95 and 1 in 100 for the p99. Simulated (two backends, 12 ms replies, a
400 ms slow share, the default budget), the p99 of a 5% slow share went from 400 ms to
45 to 85 ms with twice the p90; 1.5 times the p95 gave 90 to 150 ms (its p95 drifts into
the slow replies when more than 5 of the last 100 are slow) and the p99 400 ms. When
normal replies are themselves widely spread (a loaded machine), a fixed
``hedge_after_ms`` above their p99 is the better choice.

The budget is a bounded token counter: each reply earns ``share`` of a token, a hedge
spends a whole one, and the counter never holds more than ``burst`` tokens. Starting
empty, ``n`` replies can therefore never have caused more than ``share * n`` hedges:
the extra load is capped whatever the backends do, and a burst after a quiet spell is
capped by ``burst``. The pool also sends no hedge while any breaker of the model is
open (a partial outage must not double the load on the backends left).
"""

from __future__ import annotations

from typing import Literal

#: The smallest adaptive delay: a backend answering in microseconds is not hedged at once.
MIN_ADAPTIVE_SECONDS = 0.001
#: The percentile of the primary's time to first token an adaptive delay is made of...
ADAPTIVE_PERCENTILE = 0.90
#: ...and the multiple of it that a first token may take before a hedge (module doc).
ADAPTIVE_MULTIPLE = 2.0


class HedgeBudget:
    """At most ``share`` extra requests per reply, over any run of replies."""

    def __init__(self, share: float, *, burst: float | None = None) -> None:
        self.share = share
        # Ten hedges' worth by default, or one at a small share: enough to ride a spike.
        self.burst = burst if burst is not None else max(1.0, share * 200)
        self.tokens = 0.0
        self.replies = 0
        self.spent = 0
        self.refused = 0

    def earn(self) -> None:
        """A reply started: it adds its share, up to the bound."""
        self.replies += 1
        tokens = self.tokens + self.share
        self.tokens = tokens if tokens < self.burst else self.burst

    def spend(self) -> bool:
        """Take one token for a hedge; False (and counted) when there is none."""
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            self.spent += 1
            return True
        self.refused += 1
        return False


def hedge_delay(
    setting: float | Literal["adaptive"] | None, percentile: float | None
) -> float | None:
    """Seconds to wait for a first token before hedging; None: do not hedge this reply.

    ``setting`` is the model's ``hedge_after_ms``; ``percentile`` the primary backend's
    `ADAPTIVE_PERCENTILE` of time to first token (None until it has enough samples, and
    an adaptive pool does not hedge until then).
    """
    if setting is None:
        return None
    if setting == "adaptive":
        if percentile is None:
            return None
        return max(MIN_ADAPTIVE_SECONDS, ADAPTIVE_MULTIPLE * percentile)
    return setting / 1000.0
