"""Hedged requests: when to send a second copy of a request, and how many may be sent.

A reply whose first token is late (``hedge_after_ms``, or the primary backend's own
95th percentile with ``"adaptive"``) is started again on another healthy backend; the
first of the two to send a token wins and the other is cancelled, its connection
closed (`chatkeep.providers.pool`).

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


def hedge_delay(setting: float | Literal["adaptive"] | None, p95: float | None) -> float | None:
    """Seconds to wait for a first token before hedging; None: do not hedge this reply.

    ``setting`` is the model's ``hedge_after_ms``; ``p95`` the primary backend's 95th
    percentile of time to first token (None until it has enough samples, and an
    adaptive pool does not hedge until then).
    """
    if setting is None:
        return None
    if setting == "adaptive":
        return None if p95 is None else max(MIN_ADAPTIVE_SECONDS, p95)
    return setting / 1000.0
