"""Failed authentication attempts per client address, limited to so many a minute.

The auth middleware asks `FailedAttempts.retry_after` before it looks at a credential and
calls `FailedAttempts.record` for each one it refuses; past ``per_minute`` failures an
address is refused (``429``) until its allowance refills, at ``per_minute`` a minute.

Each address costs one float: the generic cell rate algorithm (GCRA), the token bucket
kept as the time its bucket will be full again ("theoretical arrival time"). `limits` is
not used here, unlike for the key rates (`chatkeep.quotas.rate`): its storage reads the
wall clock itself, and this limiter runs on the app's injected monotonic clock, which
tests step; the algorithm is three lines, and the bound is the part that matters.

At most ``max_clients`` addresses are tracked, the one that failed longest ago out first.
A client that rotates through more addresses than that sees its oldest ones forgotten:
a per-address limit cannot hold such a client, and the table never grows for it.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable


class FailedAttempts:
    """``per_minute`` failed attempts a minute per address, over ``max_clients`` addresses."""

    def __init__(
        self,
        per_minute: int,
        max_clients: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if per_minute < 1 or max_clients < 1:
            raise ValueError("per_minute and max_clients must be at least 1")
        self.per_minute = per_minute
        self.max_clients = max_clients
        self._clock = clock
        #: Seconds one failure costs; an address may run ``60 - interval`` ahead of now.
        self._interval = 60.0 / per_minute
        self._tolerance = 60.0 - self._interval
        #: Address -> when its allowance is whole again, least recently failed first.
        self._full_at: OrderedDict[str, float] = OrderedDict()
        #: Attempts refused, and addresses forgotten to stay within ``max_clients``.
        self.refused = 0
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._full_at)

    def retry_after(self, address: str) -> float | None:
        """Seconds ``address`` must wait before its next attempt, or ``None``."""
        full_at = self._full_at.get(address)
        if full_at is None:
            return None
        now = self._clock()
        if full_at <= now:
            del self._full_at[address]  # whole again: nothing to remember
            return None
        wait = full_at - now - self._tolerance
        if wait <= 0:
            return None
        self.refused += 1
        return wait

    def record(self, address: str) -> None:
        """Count one failed attempt of ``address``."""
        now = self._clock()
        full_at = self._full_at.pop(address, None)
        if full_at is None:
            while len(self._full_at) >= self.max_clients:
                self._full_at.popitem(last=False)
                self.evicted += 1
            full_at = now
        self._full_at[address] = max(full_at, now) + self._interval
