"""`KeyCache.known`: a cached, fresh, valid key, without ever reading the store."""

from __future__ import annotations

from chatkeep.auth.key_cache import KeyCache
from tests.unit.test_key_cache import Clock, CountingStore, add_key


async def test_known_answers_only_from_fresh_cached_valid_entries() -> None:
    store, clock = CountingStore(), Clock()
    cache = KeyCache(store, maxsize=8, ttl_seconds=1.0, clock=clock)
    secret = await add_key(store, "key_1")
    assert cache.known(secret) is None  # never looked up yet: not known
    assert store.reads == 0
    looked_up = await cache.lookup(secret)
    assert looked_up is not None and cache.known(secret) == looked_up
    clock.now += 1.0
    assert cache.known(secret) is None  # stale: it might have been revoked since
    await store.revoke_api_key("key_1", owner_id=None)
    cache.forget("key_1")
    assert await cache.lookup(secret) is None
    assert cache.known(secret) is None
    assert cache.known("not a key") is None
    assert store.reads == 2
