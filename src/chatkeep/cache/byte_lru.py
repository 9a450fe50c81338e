"""`ByteLRU`: a mapping bounded in bytes, least recently used out first.

It follows the cachetools shape: ``maxsize`` and ``currsize`` are in whatever unit
``getsizeof`` returns (bytes, for every cache in chatkeep), inserting runs
``while currsize + size > maxsize: popitem()``, and a value that could never fit
raises ``ValueError("value too large")``, which callers read as "don't cache this".

Items may carry a time to live. Expired items are not looked for eagerly: a lookup
that finds one drops it and answers a miss, and `expire` (or `reclaim`, which the
memory governor calls) sweeps them all. The clock is injected so tests tick a fake
one instead of sleeping.

Not thread-safe: it belongs to one event loop, like everything else in the server.
"""

from __future__ import annotations

import enum
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar, overload

K = TypeVar("K")
V = TypeVar("V")
D = TypeVar("D")


class _Default(enum.Enum):
    """Marks an argument left out (``None`` is a meaningful value for ``ttl``)."""

    VALUE = enum.auto()


DEFAULT: Literal[_Default.VALUE] = _Default.VALUE


@dataclass(slots=True)
class _Item(Generic[V]):
    value: V
    size: int
    expires_at: float | None


class ByteLRU(MutableMapping[K, V]):
    """A least-recently-used mapping whose values together stay within ``maxsize`` bytes.

    ``getsizeof(value)`` measures a value once, when it is stored; a value must not be
    changed in place afterwards, or ``currsize`` stops telling the truth. Reading with
    ``cache[key]`` (or ``get``) refreshes the key's recency and counts a hit or a miss;
    `peek` and ``in`` do neither.

    ``on_evict(key, value)`` is called for every item the cache removes on its own (to make
    room, when expired, or when reclaimed), after the item is gone; items the caller
    deletes or replaces are not reported.

    ``len()`` and iteration include expired items not yet dropped; lookups never return
    them.
    """

    def __init__(
        self,
        maxsize: int,
        *,
        getsizeof: Callable[[V], int],
        ttl: float | None = None,
        timer: Callable[[], float] = time.monotonic,
        on_evict: Callable[[K, V], object] | None = None,
        name: str = "byte_lru",
    ) -> None:
        if maxsize < 0:
            raise ValueError("maxsize must not be negative")
        if ttl is not None and not ttl > 0:
            raise ValueError("ttl must be positive (or None for no expiry)")
        self.name = name
        self._maxsize = maxsize
        self._getsizeof = getsizeof
        self._ttl = ttl
        self._timer = timer
        self._on_evict = on_evict
        self._items: OrderedDict[K, _Item[V]] = OrderedDict()
        self._currsize = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self.evicted_bytes = 0
        self.expirations = 0
        self.expired_bytes = 0

    # -- the bound -------------------------------------------------------------------

    @property
    def maxsize(self) -> int:
        """The bound on ``currsize``."""
        return self._maxsize

    @property
    def currsize(self) -> int:
        """The summed sizes of the items held now (expired ones included until dropped)."""
        return self._currsize

    @property
    def ttl(self) -> float | None:
        """Seconds an item lives unless `set` says otherwise; ``None`` means forever."""
        return self._ttl

    def getsizeof(self, value: V) -> int:
        """The size of ``value`` as this cache counts it."""
        return self._getsizeof(value)

    # -- the mapping -----------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[K]:
        # A snapshot: callers may delete while iterating without tripping OrderedDict.
        return iter(list(self._items))

    def __contains__(self, key: object) -> bool:
        # Mapping lets ``in`` take any object; one that is not a K is simply absent.
        item = self._items.get(key)  # type: ignore[arg-type]
        return item is not None and not self._expired(item, self._timer())

    def __getitem__(self, key: K) -> V:
        item = self._live(key)
        if item is None:
            self.misses += 1
            raise KeyError(key)
        self.hits += 1
        self._items.move_to_end(key)
        return item.value

    def __setitem__(self, key: K, value: V) -> None:
        self.set(key, value)

    def __delitem__(self, key: K) -> None:
        item = self._items.pop(key)
        self._currsize -= item.size

    def set(self, key: K, value: V, *, ttl: float | _Default | None = DEFAULT) -> None:
        """Store ``value`` as the most recently used item, evicting others to make room.

        ``ttl`` overrides the cache's default for this item (``None``: never expires).
        Raises ``ValueError("value too large")`` when the value alone exceeds ``maxsize``;
        the key then holds nothing, since the caller meant to replace what it held.
        """
        size = self._getsizeof(value)
        if size < 0:
            raise ValueError(f"getsizeof returned a negative size ({size})")
        old = self._items.pop(key, None)
        if old is not None:
            self._currsize -= old.size
        if size > self._maxsize:
            raise ValueError("value too large")
        while self._currsize + size > self._maxsize:
            self.popitem()
        lifetime = self._ttl if ttl is DEFAULT else ttl
        expires_at = None if lifetime is None else self._timer() + lifetime
        self._items[key] = _Item(value, size, expires_at)
        self._currsize += size

    @overload
    def peek(self, key: K) -> V | None: ...

    @overload
    def peek(self, key: K, default: D) -> V | D: ...

    def peek(self, key: K, default: object = None) -> object:
        """The value for ``key`` without refreshing its recency or counting a hit or miss."""
        item = self._live(key)
        return default if item is None else item.value

    @overload
    def pop(self, key: K) -> V: ...

    @overload
    def pop(self, key: K, default: V) -> V: ...

    @overload
    def pop(self, key: K, default: D) -> V | D: ...

    def pop(self, key: K, default: object = DEFAULT) -> object:
        """Remove ``key`` and return its value; a removal is not a hit, so none is counted."""
        item = self._live(key)
        if item is None:
            if default is DEFAULT:
                raise KeyError(key)
            return default
        del self[key]
        return item.value

    def popitem(self) -> tuple[K, V]:
        """Evict the least recently used item and return it."""
        try:
            key, item = self._items.popitem(last=False)
        except KeyError:
            raise KeyError(f"{self.name} is empty") from None
        self._currsize -= item.size
        if self._expired(item, self._timer()):
            self.expirations += 1
            self.expired_bytes += item.size
        else:
            self.evictions += 1
            self.evicted_bytes += item.size
        if self._on_evict is not None:
            self._on_evict(key, item.value)
        return key, item.value

    def clear(self) -> None:
        """Drop everything. The caller asked for it, so nothing counts as evicted."""
        self._items.clear()
        self._currsize = 0

    # -- expiry and reclaiming -------------------------------------------------------

    def expire(self) -> int:
        """Drop every expired item; return the bytes freed."""
        now = self._timer()
        expired = [key for key, item in self._items.items() if self._expired(item, now)]
        return sum(self._drop_expired(key) for key in expired)

    def nbytes(self) -> int:
        """Bytes held now (the memory governor's measure)."""
        return self._currsize

    def reclaim(self, fraction: float) -> int:
        """Free at least ``fraction`` of the bytes held; return the bytes freed.

        Expired items go first, since they are worth nothing; then the least recently
        used ones, only as many as it takes to reach the share.
        """
        if not 0.0 <= fraction <= 1.0:
            raise ValueError("fraction must be between 0 and 1")
        target = math.ceil(self._currsize * fraction)
        freed = self.expire()
        while freed < target and self._items:
            before = self._currsize
            self.popitem()
            freed += before - self._currsize
        return freed

    def stats(self) -> dict[str, int]:
        """Counters and sizes for ``/admin`` and ``/metrics``."""
        return {
            "maxsize": self._maxsize,
            "currsize": self._currsize,
            "items": len(self._items),
            "hits": self.hits,
            "misses": self.misses,
            "evictions": self.evictions,
            "evicted_bytes": self.evicted_bytes,
            "expirations": self.expirations,
            "expired_bytes": self.expired_bytes,
        }

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, items={len(self._items)}, "
            f"currsize={self._currsize}, maxsize={self._maxsize})"
        )

    # -- internals -------------------------------------------------------------------

    @staticmethod
    def _expired(item: _Item[V], now: float) -> bool:
        return item.expires_at is not None and now >= item.expires_at

    def _live(self, key: K) -> _Item[V] | None:
        """The item for ``key`` unless absent or expired (an expired one is dropped)."""
        item = self._items.get(key)
        if item is None:
            return None
        if self._expired(item, self._timer()):
            self._drop_expired(key)
            return None
        return item

    def _drop_expired(self, key: K) -> int:
        item = self._items.pop(key)
        self._currsize -= item.size
        self.expirations += 1
        self.expired_bytes += item.size
        if self._on_evict is not None:
            self._on_evict(key, item.value)
        return item.size
