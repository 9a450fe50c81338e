"""What a provider pool knows about each backend: passive health and a circuit breaker.

Passive health is read from real traffic, in a window of the last ``health_window``
attempts (a bounded deque, never more): the error rate, an EWMA of the time to first
token, and its percentiles (the 95th shown, the 90th for adaptive hedging). The time to
first token is learnt from every attempt that got one, hedges and attempts that lost a
race included, and from an attempt cancelled without one once it had waited past the
hedge delay: its time is only known to be at least what it waited, and it is kept as
that bound. Dropping those would leave only the fast attempts in the window (the slow
ones are the ones hedged away), and a percentile at or below the bound is unchanged by
it (`BackendHealth.no_token_after`). A backend is

* ``healthy``: in rotation, error rate below ``degraded_error_rate``;
* ``degraded``: in rotation, but failing often (or on its one trial after a cooldown):
  traffic still reaches it, hedges do not;
* ``cooldown``: its breaker is open, it gets no traffic at all.

The breaker (closed → open → half-open → closed):

* it opens after ``breaker_failures`` consecutive failures, for ``breaker_cooldown``;
  once that has passed, an active probe (`chatkeep.providers.probing`) must answer
  before the backend gets a request again;
* it opens at once on ``429`` or ``503``, for the ``Retry-After`` the backend gave (at
  most ``max_retry_after``); the backend said when to come back, so no probe is needed;
  without a ``Retry-After`` it is a failure opening like the above;
* it opens at once, for ``breaker_cooldown``, on ``401``, ``403`` or ``404``
  (`BACKEND_FAULT_STATUSES`): in a pool that is this backend's key revoked or wrong, or
  the model missing there; each answer comes back at once, so waiting for
  ``breaker_failures`` of them would let a balancer feed it most of the traffic;
* half-open lets exactly one trial request through: its success closes the breaker,
  its failure opens it again. A breaker opened for a ``Retry-After`` is half-open as
  soon as that time has passed (read from `Breaker.state`), request or not.

Every time is read from an injected clock, so tests step through cooldowns without
sleeping.
"""

from __future__ import annotations

import collections
import enum
import math
from collections.abc import Callable

from chatkeep.errors import ProviderError

#: Weight of the newest time to first token in the EWMA: about the last 10 replies count.
EWMA_ALPHA = 0.2
#: Samples needed before a percentile of the time to first token is trusted.
MIN_PERCENTILE_SAMPLES = 20
#: Samples needed before an error rate can call a backend degraded.
MIN_RATE_SAMPLES = 10
#: The longest error message kept per backend.
LAST_ERROR_CHARS = 300
#: Answers that in a pool say the backend is wrong, not the request: a key that one
#: backend refuses (401, 403) or a model it does not have (404). The same request is
#: worth sending to another backend.
BACKEND_FAULT_STATUSES = frozenset({401, 403, 404})


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Breaker:
    """The circuit breaker of one backend (see the module docstring)."""

    def __init__(
        self,
        *,
        failures: int,
        cooldown: float,
        max_retry_after: float,
        clock: Callable[[], float],
    ) -> None:
        self.threshold = failures
        self.cooldown = cooldown
        self.max_retry_after = max_retry_after
        self._clock = clock
        self._state = BreakerState.CLOSED
        self.consecutive_failures = 0
        #: While open: when it may be tried again (by a probe, or directly when `told`).
        self.open_until = 0.0
        #: Opened for a time the backend gave (Retry-After): no probe needed after it.
        self.told = False
        self.trial_inflight = False
        self.opened = 0

    @property
    def state(self) -> BreakerState:
        """Its state now: one opened for a ``Retry-After`` that has passed is half-open.

        Read this way, not when the next request happens to come: balancing, hedging
        (no hedge while a breaker is open) and ``/admin/providers`` all see it back, so
        it cannot stay ``open`` for want of traffic that its state keeps away.
        """
        state = self._state
        if state is BreakerState.OPEN and self.told and self._clock() >= self.open_until:
            state = self._state = BreakerState.HALF_OPEN
            self.trial_inflight = False
        return state

    @state.setter
    def state(self, state: BreakerState) -> None:
        self._state = state

    def allows(self) -> bool:
        """May a request go to this backend now?"""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN:
            return not self.trial_inflight
        return False  # open: a probe must answer first (`state` ends a told cooldown)

    def begin(self) -> bool:
        """A request is sent (`allows` said yes); True when it is the breaker's trial."""
        if self.state is BreakerState.CLOSED:
            return False
        self.state = BreakerState.HALF_OPEN
        self.trial_inflight = True
        return True

    def succeeded(self, trial: bool) -> None:
        self.consecutive_failures = 0
        if trial and self.state is BreakerState.HALF_OPEN:
            self.state = BreakerState.CLOSED
            self.trial_inflight = False

    def failed(self, error: ProviderError, trial: bool) -> bool:
        """Count a failure; True when it opened the breaker."""
        self.consecutive_failures += 1
        if trial:
            self.trial_inflight = False
        status = error.upstream_status
        if status in (429, 503) and error.retry_after is not None:
            self._open(min(error.retry_after, self.max_retry_after), told=True)
            return True
        if (
            status in (429, 503)
            or status in BACKEND_FAULT_STATUSES
            or self.state is BreakerState.HALF_OPEN
            or self.consecutive_failures >= self.threshold
        ):
            if self.state is BreakerState.OPEN:
                return False  # already out: a late failure does not extend the cooldown
            self._open(self.cooldown, told=False)
            return True
        return False

    def abandoned(self, trial: bool) -> None:
        """A request ended with no verdict (its client left): another may be the trial."""
        if trial:
            self.trial_inflight = False

    def needs_probe(self) -> bool:
        """Open after failures, with its cooldown over: only a probe brings it back."""
        return (
            self.state is BreakerState.OPEN and not self.told and self._clock() >= self.open_until
        )

    def probed(self, ok: bool) -> None:
        """A probe's verdict: up → half-open (one trial); down → another cooldown."""
        if self.state is not BreakerState.OPEN:
            return
        if ok:
            self.state = BreakerState.HALF_OPEN
            self.trial_inflight = False
        else:
            self.open_until = self._clock() + self.cooldown

    def reopens_in(self) -> float | None:
        """Seconds until requests may go again without a probe; None when one is needed."""
        if self.state is not BreakerState.OPEN:
            return 0.0
        if not self.told:
            return None
        return max(0.0, self.open_until - self._clock())

    def _open(self, seconds: float, *, told: bool) -> None:
        self.state = BreakerState.OPEN
        self.open_until = self._clock() + seconds
        self.told = told
        self.trial_inflight = False
        self.opened += 1


class BackendHealth:
    """Passive statistics of one backend over its last ``window`` attempts."""

    def __init__(self, *, window: int, degraded_error_rate: float) -> None:
        self.window = window
        self.degraded_error_rate = degraded_error_rate
        #: True for each attempt that succeeded, newest last (bounded).
        self._outcomes: collections.deque[bool] = collections.deque(maxlen=window)
        self._failures_in_window = 0
        #: Times to first token, or lower bounds of them (`no_token_after`), bounded.
        self._ttft: collections.deque[float] = collections.deque(maxlen=window)
        self._ordered: list[float] = []
        self._ordered_stale = 0
        self.ewma_ttft: float | None = None
        self.inflight = 0
        self.requests = 0
        self.failures = 0
        self.hedges_won = 0
        self.hedges_lost = 0
        self.last_error: str | None = None
        self.last_error_at: float | None = None

    def first_token(self, seconds: float) -> None:
        """An attempt got its first token ``seconds`` after it was sent."""
        ewma = self.ewma_ttft
        self.ewma_ttft = seconds if ewma is None else ewma + EWMA_ALPHA * (seconds - ewma)
        self._ttft.append(seconds)
        self._ordered_stale += 1

    def no_token_after(self, seconds: float) -> None:
        """An attempt was cancelled ``seconds`` after it was sent, still without a token.

        Its time to first token is at least ``seconds`` and is counted as that: a
        percentile at or below the bound comes out the same as if the true time were
        known; one above it can come out lower, by at most one rank per such bound in
        the window. The pool reports only bounds past the hedge delay, which is twice
        the percentile it is made of (`chatkeep.providers.hedging`).
        """
        self.first_token(seconds)

    def outcome(self, ok: bool) -> None:
        """The end of an attempt: True when it delivered its answer."""
        outcomes = self._outcomes
        if len(outcomes) == outcomes.maxlen and not outcomes[0]:
            self._failures_in_window -= 1
        outcomes.append(ok)
        if not ok:
            self._failures_in_window += 1
            self.failures += 1

    def error(self, message: str, at: float) -> None:
        self.last_error = message[:LAST_ERROR_CHARS]
        self.last_error_at = at

    @property
    def samples(self) -> int:
        return len(self._outcomes)

    @property
    def error_rate(self) -> float:
        """Failed share of the attempts in the window (0 without any)."""
        return self._failures_in_window / len(self._outcomes) if self._outcomes else 0.0

    def ttft_percentile(self, fraction: float) -> float | None:
        """The ``fraction`` percentile (0.9: p90) of the time to first token.

        None below `MIN_PERCENTILE_SAMPLES`. The window is sorted again after a
        twentieth of it has changed, not on every call: a sort per request would cost
        more than the percentiles move.
        """
        samples = len(self._ttft)
        if samples < MIN_PERCENTILE_SAMPLES:
            return None
        ordered = self._ordered
        if not ordered or self._ordered_stale >= max(1, samples // 20):
            ordered = self._ordered = sorted(self._ttft)
            self._ordered_stale = 0
        count = len(ordered)
        return ordered[max(0, min(count - 1, math.ceil(fraction * count) - 1))]

    def p95_ttft(self) -> float | None:
        """95th percentile of the time to first token (`ttft_percentile`)."""
        return self.ttft_percentile(0.95)

    def state(self, breaker: Breaker) -> str:
        """``healthy``, ``degraded`` or ``cooldown`` (see the module docstring)."""
        if breaker.state is BreakerState.OPEN:
            return "cooldown"
        if breaker.state is BreakerState.HALF_OPEN:
            return "degraded"
        if self.samples >= MIN_RATE_SAMPLES and self.error_rate >= self.degraded_error_rate:
            return "degraded"
        return "healthy"
