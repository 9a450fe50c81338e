"""Which backend a pool's attempt goes to, and the wait for a free in-flight slot.

`Slots` picks among the backends whose breaker lets requests through and that are
under their in-flight bound, preferring those not yet tried for the reply (the
balancer, `chatkeep.providers.balancing`, chooses among them). When every backend in
rotation is at its bound, a reply waits for an attempt to end, within its deadline;
past it the reply is refused with `Overloaded` (``503`` with ``Retry-After``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from chatkeep.errors import Overloaded, ProviderUnavailable
from chatkeep.providers.attempts import Reply
from chatkeep.providers.backend import Backend
from chatkeep.providers.balancing import Balancer
from chatkeep.providers.health import BreakerState


class NoBackendAvailable(ProviderUnavailable):
    """No backend of a model can take a request now.

    ``busy``: some are in rotation but at their in-flight bound (the pool waits for a
    free slot, `Slots.choose`); otherwise every one is out of rotation, and
    ``retry_after`` says for how long when a backend said so.
    """

    busy = False


class Slots:
    """The choice of a backend for each attempt of a model's replies."""

    def __init__(
        self,
        model: str,
        backends: Sequence[Backend],
        balancer: Balancer,
        clock: Callable[[], float],
    ) -> None:
        self.model = model
        self.backends = backends
        self._balancer = balancer
        self._clock = clock
        #: Replies waiting for a free slot, and what wakes them: set (then replaced) when
        #: an attempt ends. Counted so that an attempt's end costs nothing when none waits.
        self.waiting = 0
        self._freed = asyncio.Event()
        # A wait for a slot is bounded by the attempt timeout too, when every backend has one.
        limits = [b.attempt_timeout for b in self.backends]
        self._slot_wait_max = (
            None if None in limits else max(limit for limit in limits if limit is not None)
        )

    async def choose(self, reply: Reply) -> Backend:
        """`pick`, waiting for a free slot while every backend in rotation is busy.

        The wait is not an attempt (it uses none of ``attempts``): a busy pool is not a
        failing one. It is bounded by what is left of the reply's deadline, and by the
        attempt timeout when every backend has one; past that the reply is refused with
        `Overloaded` (``503``, ``Retry-After``) so its client knows to come back.
        """
        until: float | None = None
        while True:
            try:
                return self.pick(reply)
            except NoBackendAvailable as exc:
                if not exc.busy:
                    raise
                busy = exc
            now = self._clock()
            if until is None:
                cap = self._slot_wait_max
                until = reply.deadline if cap is None else min(reply.deadline, now + cap)
            left = until - now
            if left <= 0:
                raise Overloaded(f"{busy.message}; no slot freed in time", retry_after=1.0)
            freed = self._freed
            self.waiting += 1
            try:
                async with asyncio.timeout(left):
                    await freed.wait()
            except TimeoutError:
                raise Overloaded(
                    f"{busy.message}; no slot freed in time", retry_after=1.0
                ) from None
            finally:
                self.waiting -= 1

    def wake(self) -> None:
        """An attempt ended: wake every waiting reply.

        Each picks again, and those that find no slot wait again on the next event.
        """
        freed, self._freed = self._freed, asyncio.Event()
        freed.set()

    def pick(self, reply: Reply) -> Backend:
        """A backend for the reply's next attempt, or `NoBackendAvailable`."""
        backends = self.backends
        if len(backends) == 1:
            only = backends[0]
            if only.usable():
                return only
            raise self._none_available()
        usable = [b for b in backends if b.usable()]
        fresh = [b for b in usable if b not in reply.tried] if reply.tried else usable
        if not (fresh or usable):
            raise self._none_available()
        return self._balancer.choose(fresh or usable)

    def _none_available(self) -> NoBackendAvailable:
        backends = self.backends
        if any(b.breaker.allows() for b in backends):
            busy = NoBackendAvailable(
                f"model {self.model!r}: every backend is at its in-flight bound "
                f"({sum(b.max_inflight for b in backends)} requests)"
            )
            busy.busy = True
            return busy
        reopens = [
            s
            for b in backends
            if b.breaker.state is BreakerState.OPEN and (s := b.breaker.reopens_in()) is not None
        ]
        soonest = min(reopens) if reopens else None
        when = "until a probe answers" if soonest is None else f"for {soonest:.1f} s"
        return NoBackendAvailable(
            f"model {self.model!r}: every backend is out of rotation ({when})",
            retry_after=soonest,
        )

    def waits(self, reply: Reply) -> float | None:
        """What the retry loop may do now; see `RetryPolicy.retrying`."""
        usable = [b for b in self.backends if b.usable()]
        if any(b not in reply.tried for b in usable):
            return 0.0
        if usable or any(b.breaker.state is not BreakerState.OPEN for b in self.backends):
            return -1.0  # tried ones only, or all busy: back off, then go again
        reopens = [s for b in self.backends if (s := b.breaker.reopens_in()) is not None]
        return min(reopens) if reopens else None
