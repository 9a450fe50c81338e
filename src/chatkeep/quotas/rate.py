"""Request rates per API key: ``rate`` a second sustained, bursts up to ``burst``.

The counting is `limits`' (its sliding-window-counter strategy over its in-memory storage,
which has a Redis twin for when limits must be shared by several instances); this module
only chooses the windows, bounds how many keys are tracked, and keeps the storage quiet.

**Windows.** A token bucket of size B filled at N a second is approximated by the sliding
window counter "B per B/N seconds": at most B at once after a pause, N a second
sustained, two counters per key whatever the traffic (a moving window would keep a
timestamp per request: B of them). `limits` takes whole seconds only (``RateLimitItem``
truncates its multiples to ``int``; its granularities are whole seconds), so when B/N is
not a whole number (or B is under ten) the bucket becomes two items, both of which a
request must pass:

* sustained: ``round(N·W)`` per ``W`` seconds, ``W = ceil(max(B, 10) / N)``: the rate
  within 5% (the rounding of at least ten requests), usually far closer;
* burst: ``B`` per second, so a pause still buys at most B at once.

With the defaults (20 a second, bursts of 40) one item is exact: 40 per 2 seconds. A
burst below one second's worth of rate cannot be expressed in whole-second windows and
becomes one second's worth. Like every sliding window counter, the count of the previous
window is weighted by how much of it is still inside the sliding window: an estimate, not
an exact log, which is the price of constant memory.

**Families.** A key made by a key counts twice: under its own id with its own limits,
and under its family's root's id with the family's budget (`ApiKey.family_budget`, the
root's limits, copied when the key was made). The root's own counters are the family's, so
the family's keys together, the root included, never pass the root's rate and burst,
however many keys were minted. A request is tested against every item of both before it
is counted by any: a refusal by one budget takes nothing from the other.

**Retry-After** is `limits`' own estimate of when the refusing item lets one more through
(optimistic when a whole window is spent: a client that retries too early is refused
again, with a fresh estimate).

**Bounds.** At most ``max_keys`` keys (and families) are tracked, least recently seen
out first; an evicted key's counters are cleared, and one seen again starts afresh (with a
full burst). The two entries one request needs are never evicted for each other: with
``max_keys`` 1, a family's key and its root make two.
A tracked key has at most three live counters per item (the current window, the previous
one, the one before until it expires) and leaves an expired one behind at each new window;
when the storage holds ``max_counters`` (``12 * max_keys``: twice what live counters can
reach) a sweep drops the expired ones, so a sweep's cost is paid for by at least as many
hits that each added a counter.

**No thread.** `limits`' in-memory storage starts a ``threading.Timer`` (10 ms) after a
hit whenever the last one has run, to drop expired counters: with hits more than 10 ms
apart that is a thread start per hit (about 270 µs here, against 7 µs for the hit), and
the timer walks the counters while the event loop changes them, which can raise
``KeyError`` in the timer thread (flask-limiter#130, closed as won't fix). The storage here
gets a timer that never runs; expiry is the bounded sweep above, plus what the storage
drops itself when it reads an expired counter.

**Cost.** A hit allowed by one item (the default limits) takes about 5 µs, by two items
17 µs, a refusal (with its Retry-After) 9 µs: CPython 3.11 on the development machine,
100 000 hits of one key. A key of a family with one item each (its own, its family's)
tests both, then counts both: about 30 µs, measured the same way (against 9 µs for a root
on that run). All on the event loop: no await, no thread.

Time is the storage's (``time.time()``, read inside `limits`); tests replace the
``time`` module those library modules see with a fake one.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from limits import RateLimitItem, RateLimitItemPerSecond
from limits.storage import MemoryStorage
from limits.strategies import SlidingWindowCounterRateLimiter

from chatkeep.domain.keys import ApiKey

#: Requests the sustained window holds at least, so that rounding it to a whole number of
#: requests changes the rate by 5% at most.
MIN_WINDOW_REQUESTS = 10
#: Counters one tracked item may hold in the storage (current, previous, one not yet swept).
COUNTERS_PER_ITEM = 3
#: Items per key at most (sustained and burst).
MAX_ITEMS = 2


def rate_items(rate: float, burst: int) -> tuple[RateLimitItem, ...]:
    """The `limits` items standing for "``rate`` a second, bursts up to ``burst``".

    One item when B/N is a whole number of seconds (and one item covers at least
    `MIN_WINDOW_REQUESTS`), else a burst item and a sustained one; see the module docstring.
    """
    if not rate > 0 or burst < 1:
        raise ValueError("a rate limit needs rate > 0 and burst >= 1")
    window = max(1, math.ceil(max(burst, MIN_WINDOW_REQUESTS) / rate))
    amount = max(1, round(rate * window))
    sustained = RateLimitItemPerSecond(amount, window, namespace="rate")
    # A burst item allowing a second's worth of rate or more adds nothing over the
    # sustained item's own second.
    burst_amount = max(burst, math.ceil(rate))
    if burst_amount >= amount:
        return (sustained,)
    return (RateLimitItemPerSecond(burst_amount, 1, namespace="burst"), sustained)


def threadless_memory_storage() -> MemoryStorage:
    """`limits`' in-memory storage whose expiry timer never runs (see the module docstring)."""
    storage = MemoryStorage()
    storage.timer.cancel()
    storage.timer.join()
    storage.timer = _ParkedTimer()
    return storage


class _ParkedTimer(threading.Timer):
    """A timer that is never started but says it runs, so the storage starts no other."""

    def __init__(self) -> None:
        super().__init__(0, lambda: None)

    def is_alive(self) -> bool:
        return True


@dataclass(slots=True)
class _Tracked:
    """The items of one tracked key, for the limits they were made from."""

    rate: float
    burst: int
    items: tuple[RateLimitItem, ...]


class KeyRateLimiter:
    """``hit(key)``: ``None`` when the key may make a request now, else seconds to wait.

    Tracks at most ``max_keys`` keys (see the module docstring for the bounds). Not
    thread-safe: it belongs to the event loop, like the rest of the server.
    """

    def __init__(self, max_keys: int) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self.max_keys = max_keys
        #: Counters the storage may hold before it is swept: twice what the tracked keys'
        #: live counters can reach, so that a sweep always halves the storage at least.
        self.max_counters = 2 * COUNTERS_PER_ITEM * MAX_ITEMS * max_keys
        self.storage = threadless_memory_storage()
        self._limiter = SlidingWindowCounterRateLimiter(self.storage)
        self._keys: OrderedDict[str, _Tracked] = OrderedDict()
        #: Requests refused, and keys forgotten to stay within ``max_keys``.
        self.refused = 0
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def counters(self) -> int:
        """Counters the storage holds (expired ones not yet dropped included)."""
        return len(self.storage.storage)

    def hit(self, key: ApiKey) -> float | None:
        """Count one request of ``key``; ``None`` if allowed, else the seconds to wait.

        A key of a family is held to its own limits and to its family's budget.
        """
        limits, key_id = key.limits, key.id
        own = self._track(key_id, limits.rate, limits.burst)
        family_id, budget = key.family_id, key.family_budget
        if family_id is None or budget is None:
            self._make_room(key_id)
            checks: tuple[tuple[RateLimitItem, str], ...] = tuple(
                (item, key_id) for item in own.items
            )
        else:
            family = self._track(family_id, budget.rate, budget.burst)
            self._make_room(key_id, family_id)
            checks = tuple((item, key_id) for item in own.items) + tuple(
                (item, family_id) for item in family.items
            )
        if len(self.storage.storage) >= self.max_counters:
            self._sweep()
        refusing: tuple[tuple[RateLimitItem, str], ...]
        if len(checks) == 1:
            item, counted = checks[0]
            if self._limiter.hit(item, counted):
                return None
            refusing = checks
        else:
            # Tested first, so that a request one item refuses is not counted by another.
            refusing = tuple(
                (item, counted) for item, counted in checks if not self._limiter.test(item, counted)
            )
            if not refusing:
                for item, counted in checks:
                    self._limiter.hit(item, counted)
                return None
        self.refused += 1
        return self._wait(refusing)

    def forget(self, key_id: str) -> None:
        """Stop tracking a key (a revoked one); nothing is left of it in the storage."""
        tracked = self._keys.pop(key_id, None)
        if tracked is not None:
            self._clear(tracked, key_id)

    def close(self) -> None:
        """Drop every counter; the limiter may still be used, from a clean slate."""
        self._keys.clear()
        self.storage.reset()

    def _track(self, key_id: str, rate: float, burst: int) -> _Tracked:
        """The items of ``key_id`` (a key's, or a family's), now the most recently seen."""
        tracked = self._keys.get(key_id)
        if tracked is not None:
            if tracked.rate == rate and tracked.burst == burst:
                self._keys.move_to_end(key_id)
                return tracked
            # The limits changed: the counters under the old items go.
            self._clear(tracked, key_id)
            del self._keys[key_id]
        tracked = _Tracked(rate, burst, rate_items(rate, burst))
        self._keys[key_id] = tracked
        return tracked

    def _make_room(self, *keep: str) -> None:
        """Forget the least recently seen keys beyond ``max_keys``, but never ``keep``."""
        while len(self._keys) > self.max_keys:
            old_id = next(iter(self._keys))
            if old_id in keep:  # the rest were just seen: they are all in ``keep``
                return
            self._clear(self._keys.pop(old_id), old_id)
            self.evicted += 1

    def _clear(self, tracked: _Tracked, key_id: str) -> None:
        """Remove the counters of ``tracked`` items: this window, the last, the one before."""
        now = time.time()
        for item in tracked.items:
            key, expiry = item.key_for(key_id), item.get_expiry()
            older, previous = self.storage.sliding_window_keys(key, expiry, now - expiry)
            _, current = self.storage.sliding_window_keys(key, expiry, now)
            for counter in (older, previous, current):
                self.storage.clear(counter)

    def _sweep(self) -> None:
        """Drop expired counters (the storage drops one when it reads it expired)."""
        for counter in list(self.storage.expirations):
            self.storage.get(counter)

    def _wait(self, refusing: tuple[tuple[RateLimitItem, str], ...]) -> float:
        now = time.time()
        waits = (
            self._limiter.get_window_stats(item, counted).reset_time - now
            for item, counted in refusing
        )
        # Never zero: the refusal stands for this instant at least.
        return max(0.001, *waits)
