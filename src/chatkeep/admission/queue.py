"""Admission control: a bounded, prioritised queue in front of the model backends.

At most ``max_inflight`` generations run at once; up to ``max_queued`` more wait,
lowest priority number first (FIFO within a priority). Past that a request is
refused at once with `Overloaded` (HTTP 503 + ``Retry-After``), so a flood costs
constant memory instead of an ever-longer queue.

Each owner may have at most ``max_queued_per_owner`` of its generations waiting; one more
is refused with `RateLimited` (429 + ``Retry-After``). A flood from one owner thus holds a
bounded share of the line: another owner's request, at the same priority, waits behind
at most that many of the flood's, and finds room in the line while the flood is refused.
Only owners with a waiter have an entry in the per-owner table.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

from chatkeep.errors import Overloaded, RateLimited


@dataclass(order=True, slots=True)
class _Waiter:
    priority: int
    order: int
    future: asyncio.Future[None] = field(compare=False)
    #: Whose waiter it is, while it counts in its owner's share (``None`` once it left).
    owner: str | None = field(default=None, compare=False)


class AdmissionQueue:
    """Slots for generations. `acquire` waits for one; `release` hands it on."""

    def __init__(
        self,
        *,
        max_inflight: int,
        max_queued: int,
        retry_after: float = 1.0,
        max_queued_per_owner: int | None = None,
    ) -> None:
        self.max_inflight = max_inflight
        self.max_queued = max_queued
        self.retry_after = retry_after
        #: Waiting generations one owner may have (``None``: no share, only ``max_queued``).
        self.max_queued_per_owner = max_queued_per_owner
        self.inflight = 0
        #: Refused for the whole line (503), and for an owner's share of it (429).
        self.rejected = 0
        self.refused_per_owner = 0
        self._waiters: list[_Waiter] = []
        #: Owner -> its waiters in the line; owners without one have no entry.
        self._waiting: dict[str, int] = {}
        self._order = itertools.count()
        #: Called before admitting; raises `Overloaded` to refuse (the memory governor's hook).
        self.gate: Callable[[], None] | None = None
        self._closed: Callable[[], Overloaded] | None = None

    @property
    def queued(self) -> int:
        return sum(1 for w in self._waiters if not w.future.done())

    @property
    def owners_waiting(self) -> int:
        """Owners with at least one generation in the line."""
        return len(self._waiting)

    def waiting(self, owner: str) -> int:
        """Generations of ``owner`` in the line."""
        return self._waiting.get(owner, 0)

    def close(self, refusal: Callable[[], Overloaded]) -> None:
        """Admit nothing more: every waiter and every later `acquire` gets ``refusal()``.

        For a server that is stopping; slots already taken are still given back as usual.
        """
        self._closed = refusal
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            self._left(waiter)
            if not waiter.future.done():
                self.rejected += 1
                waiter.future.set_exception(refusal())

    async def acquire(self, priority: int = 0, owner: str | None = None) -> None:
        """Take a slot, waiting in line if needed.

        Raises `RateLimited` when ``owner`` already has its share of the line waiting, and
        `Overloaded` when the line is full.
        """
        if self._closed is not None:
            self.rejected += 1
            raise self._closed()
        if self.gate is not None:
            try:
                self.gate()
            except Overloaded:
                self.rejected += 1
                raise
        if self.inflight < self.max_inflight and not self._waiters:
            self.inflight += 1
            return
        share = self.max_queued_per_owner
        if owner is not None and share is not None and self._waiting.get(owner, 0) >= share:
            self.refused_per_owner += 1
            raise RateLimited(
                f"{share} generations of this owner are already waiting; retry later",
                self.retry_after,
            )
        if len(self._waiters) >= self.max_queued:
            self.rejected += 1
            raise Overloaded(
                f"too many generations waiting ({self.max_queued} queued, "
                f"{self.max_inflight} running); retry later",
                self.retry_after,
            )
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiter = _Waiter(priority, next(self._order), future, owner)
        if owner is not None:
            self._waiting[owner] = self._waiting.get(owner, 0) + 1
        heapq.heappush(self._waiters, waiter)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled() and future.exception() is None:
                # The slot was handed to us just as we were cancelled: pass it on.
                self.release()
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
                heapq.heapify(self._waiters)
                self._left(waiter)
            raise

    def release(self) -> None:
        """Give a slot back; the first waiter in line gets it."""
        while self._waiters:
            waiter = heapq.heappop(self._waiters)
            self._left(waiter)
            if not waiter.future.done():
                waiter.future.set_result(None)  # the slot moves over; inflight is unchanged
                return
        self.inflight -= 1

    def _left(self, waiter: _Waiter) -> None:
        """``waiter`` is out of the line: it no longer counts in its owner's share."""
        owner, waiter.owner = waiter.owner, None
        if owner is None:
            return
        left = self._waiting[owner] - 1
        if left:
            self._waiting[owner] = left
        else:
            del self._waiting[owner]
