"""When a provider pool tries a reply again, and how long it waits first (with tenacity).

Only before the reply's first token: once a token has reached anyone, the reply is
never restarted (it ends ``incomplete``). Then:

* retried: connection errors, timeouts, a stream cut before its first token, ``5xx``
  and ``429`` (`ProviderUnavailable`, `ProviderTimeout`, `StreamCut`), and ``401``,
  ``403`` and ``404``: in a pool those say this backend's key or model is wrong
  (`chatkeep.providers.health.BACKEND_FAULT_STATUSES`), and another may serve it;
* never retried: any other answer ``>= 400`` (the request itself is wrong: sending it
  elsewhere gets the same answer) and anything that is not a `ProviderError`;
* at most ``attempts`` tries, and never past the reply's total deadline: a wait that
  would end past it stops the retries instead (timeouts never stack);
* the wait: none when a backend not yet tried in this reply is available; else until
  the soonest breaker reopens when every backend is out (a ``Retry-After``), else an
  exponential backoff with full jitter (tenacity's ``wait_random_exponential``).

Cost: tenacity's loop costs 19 to 27 µs per call even when the first try succeeds
(measured: an awaited no-op 0.09 µs; ``async for attempt in AsyncRetrying(...)`` 27 µs;
``AsyncRetrying.copy()`` per call 25 µs; ``await retrying(fn)`` 19 µs; CPython 3.11,
tenacity 9.2). That is half the pool's whole 50 µs budget, so the first try runs on its
own and tenacity is entered only after a retryable failure, which it replays as its
own first attempt so that its stop and wait rules see every try.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)
from tenacity.stop import stop_base

from chatkeep.errors import ProviderError, ProviderTimeout, ProviderUnavailable, StreamCut
from chatkeep.providers.health import BACKEND_FAULT_STATUSES


def retryable(error: BaseException) -> bool:
    """May a reply that failed with ``error`` before its first token be tried again?"""
    if isinstance(error, ProviderUnavailable | ProviderTimeout | StreamCut):
        return True
    return isinstance(error, ProviderError) and error.upstream_status in BACKEND_FAULT_STATUSES


def counts_against_backend(error: ProviderError) -> bool:
    """Does ``error`` say the backend is unwell? Another 4xx says the request is."""
    return retryable(error)


class _PastDeadline(stop_base):
    """Stop when the next try could not start before the deadline, or cannot start at all."""

    def __init__(
        self, deadline: float, clock: Callable[[], float], waits: Callable[[], float | None]
    ) -> None:
        self._deadline = deadline
        self._clock = clock
        self._waits = waits

    def __call__(self, retry_state: RetryCallState) -> bool:
        if self._waits() is None:
            return True  # every backend is out until a probe says otherwise
        return self._clock() + retry_state.upcoming_sleep >= self._deadline


class RetryPolicy:
    """The retry rules of one model; `retrying` makes the loop of one reply."""

    def __init__(
        self,
        *,
        attempts: int,
        backoff: float,
        backoff_max: float,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
    ) -> None:
        self.attempts = attempts
        self._backoff = wait_random_exponential(multiplier=backoff, max=backoff_max)
        self._clock = clock
        self._sleep = sleep

    def retrying(self, deadline: float, waits: Callable[[], float | None]) -> AsyncRetrying:
        """The loop of one reply, whose total deadline is ``deadline`` (on the clock).

        ``waits()`` says what the pool can do now: 0.0 when an untried backend is
        available, the seconds until the soonest breaker reopens when every one is
        out, None when none will without a probe, and -1.0 when only backends already
        tried are available (then the backoff applies).
        """

        def wait(retry_state: RetryCallState) -> float:
            pause = waits()
            if pause is None:
                return 0.0  # the stop rule ends the loop
            if pause < 0:
                return float(self._backoff(retry_state))
            return pause

        async def sleep(seconds: float) -> None:
            if seconds > 0:  # failing over to another backend waits for nothing
                await self._sleep(seconds)

        return AsyncRetrying(
            stop=stop_after_attempt(self.attempts) | _PastDeadline(deadline, self._clock, waits),
            wait=wait,
            retry=retry_if_exception(retryable),
            sleep=sleep,
            reraise=True,
        )
