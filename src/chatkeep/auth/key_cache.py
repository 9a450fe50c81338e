"""`KeyCache`: a request's secret to its `ApiKey`, in a dict lookup when the key is known.

Every request with a key asks this cache. A hit costs the secret's SHA-256, one dict
lookup and one clock read; a miss reads the store (by the hash's unique index) and keeps
the answer for ``ttl_seconds``. After that the entry is read again, so a key revoked by
another process (`chatkeep keys revoke` next to a running server, another instance)
stops working within ``ttl_seconds``; a revoke through this process calls `forget` and
takes effect at once.

Bounds:

* known keys: ``maxsize`` entries, least recently used evicted first. Only keys that
  exist get in, so nobody fills this from outside without holding that many keys.
* unknown secrets: a separate, small LRU (``negative_size``), so a client retrying a
  wrong key does not read the store each time, while a flood of made-up keys only
  churns that small table — it never evicts a real key.
* reads in flight: one per distinct hash; concurrent lookups of the same secret wait
  for the same read (`asyncio.shield`: one caller leaving does not cancel the others').
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chatkeep.auth.secrets import hash_secret, looks_like_key
from chatkeep.domain.keys import ApiKey
from chatkeep.storage.key_store import KeyStore

#: Unknown secrets remembered at most (each entry: a 64-character hash and a float).
DEFAULT_NEGATIVE_SIZE = 1024


@dataclass(slots=True)
class _Entry:
    key: ApiKey
    expires: float


class KeyCache:
    """``KeyCache(store, maxsize=..., ttl_seconds=..., clock=time.monotonic)``."""

    def __init__(
        self,
        store: KeyStore,
        *,
        maxsize: int,
        ttl_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        negative_size: int = DEFAULT_NEGATIVE_SIZE,
    ) -> None:
        if maxsize < 1 or ttl_seconds <= 0 or negative_size < 0:
            raise ValueError("maxsize must be >= 1, ttl_seconds > 0, negative_size >= 0")
        self._store = store
        self.maxsize = maxsize
        self.ttl_seconds = ttl_seconds
        self.negative_size = min(negative_size, maxsize)
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._hash_by_id: dict[str, str] = {}
        self._unknown: OrderedDict[str, float] = OrderedDict()  # hash → expires
        self._loading: dict[str, asyncio.Task[ApiKey | None]] = {}
        # Bumped by `forget`: a read that started before a revoke may have seen the key
        # unrevoked, so its answer is not kept.
        self._generation = 0
        self.hits = 0
        self.misses = 0

    async def lookup(self, secret: str) -> ApiKey | None:
        """The key ``secret`` belongs to, or ``None`` (unknown, revoked, or not a key)."""
        if not looks_like_key(secret):
            return None
        digest = hash_secret(secret)
        now = self._clock()
        entry = self._entries.get(digest)
        if entry is not None and now < entry.expires:
            self._entries.move_to_end(digest)
            self.hits += 1
            return entry.key if entry.key.revoked_at is None else None
        expires = self._unknown.get(digest)
        if expires is not None and now < expires:
            self.hits += 1
            return None
        self.misses += 1
        loading = self._loading.get(digest)
        if loading is None:
            loading = asyncio.create_task(
                self._load(digest, self._generation), name="api-key-lookup"
            )
            self._loading[digest] = loading
            loading.add_done_callback(lambda task: self._loaded(digest, task))
        key = await asyncio.shield(loading)
        return key if key is not None and key.revoked_at is None else None

    def known(self, secret: str) -> ApiKey | None:
        """The valid key ``secret`` belongs to when it is cached and fresh; never reads the store.

        For a client address that is being refused for its failed attempts: a key it has
        been using still works, a guess costs nothing.
        """
        if not looks_like_key(secret):
            return None
        entry = self._entries.get(hash_secret(secret))
        if entry is None or self._clock() >= entry.expires or entry.key.revoked_at is not None:
            return None
        return entry.key

    def forget(self, key_id: str) -> None:
        """Drop ``key_id``'s entry: its next lookup reads the store (after a revoke)."""
        self._generation += 1
        digest = self._hash_by_id.pop(key_id, None)
        if digest is not None:
            self._entries.pop(digest, None)

    def stats(self) -> dict[str, Any]:
        """What ``/admin`` shows: sizes, bounds, hits and misses."""
        return {
            "size": len(self._entries),
            "maxsize": self.maxsize,
            "unknown": len(self._unknown),
            "unknown_maxsize": self.negative_size,
            "loading": len(self._loading),
            "ttl_seconds": self.ttl_seconds,
            "hits": self.hits,
            "misses": self.misses,
        }

    def __len__(self) -> int:
        return len(self._entries)

    async def _load(self, digest: str, generation: int) -> ApiKey | None:
        key = await self._store.find_api_key(digest)
        if generation == self._generation:
            self._keep(digest, key)
        return key

    def _loaded(self, digest: str, task: asyncio.Task[ApiKey | None]) -> None:
        if self._loading.get(digest) is task:
            del self._loading[digest]
        if not task.cancelled():
            task.exception()  # retrieved: every caller may have left before it failed

    def _keep(self, digest: str, key: ApiKey | None) -> None:
        expires = self._clock() + self.ttl_seconds
        if key is None:
            if self.negative_size:
                self._unknown[digest] = expires
                self._unknown.move_to_end(digest)
                while len(self._unknown) > self.negative_size:
                    self._unknown.popitem(last=False)
            return
        self._unknown.pop(digest, None)
        self._entries[digest] = _Entry(key, expires)
        self._entries.move_to_end(digest)
        self._hash_by_id[key.id] = digest
        while len(self._entries) > self.maxsize:
            _, evicted = self._entries.popitem(last=False)
            self._hash_by_id.pop(evicted.key.id, None)
