"""`ThinnedSeries`: a bounded, evenly thinned record of a long series.

Memory samples and per-request latencies arrive for as long as a soak runs; the plot and the
trend test need them spread over the whole run, not only the last few. The series keeps
every ``stride``-th item; when it is full it drops every other item it holds and doubles the
stride. What remains is always a systematic sample of everything seen, at most ``capacity``
items, so a one-hour run and a ten-second one cost the same memory.
"""

from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")


class ThinnedSeries(Generic[T]):
    """At most ``capacity`` items, evenly spread over all items appended."""

    __slots__ = ("_items", "_last", "_seen", "_stride", "capacity")

    def __init__(self, capacity: int) -> None:
        if capacity < 2:
            raise ValueError("capacity must be at least 2")
        self.capacity = capacity
        self._items: list[T] = []
        self._stride = 1
        self._seen = 0
        self._last: T | None = None

    def append(self, item: T) -> None:
        """Offer one item; it is kept if it falls on the current stride."""
        if self._seen % self._stride == 0:
            self._items.append(item)
            if len(self._items) >= self.capacity:
                # Items were kept at multiples of the stride; every other one of them sits
                # at a multiple of twice the stride, so the rule stays consistent.
                del self._items[1::2]
                self._stride *= 2
        self._seen += 1
        self._last = item

    @property
    def seen(self) -> int:
        """How many items were ever appended."""
        return self._seen

    @property
    def stride(self) -> int:
        """One item kept out of every ``stride`` appended."""
        return self._stride

    def __len__(self) -> int:
        return len(self._items)

    def items(self) -> list[T]:
        """The kept items in order, ending with the most recent one even if it was thinned.

        The trend test and the "end" figures want the final state of the run, so the last
        item is always part of the view (the result may hold ``capacity`` items).
        """
        kept = list(self._items)
        if self._last is not None and (self._seen - 1) % self._stride != 0:
            kept.append(self._last)
        return kept
