"""The key cache: bounded, re-read after its seconds, one store read per secret at a time."""

from __future__ import annotations

import asyncio

import pytest

from chatkeep.auth.key_cache import KeyCache
from chatkeep.auth.secrets import hash_secret, new_secret
from chatkeep.domain.keys import ApiKey, KeyLimits
from chatkeep.errors import StorageError
from chatkeep.storage.memory import MemoryStore

LIMITS = KeyLimits(rate=1.0, burst=1, max_streams=1, priority=0)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingStore(MemoryStore):
    """A memory store that counts key lookups and can hold them until released."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0
        self.gate: asyncio.Event | None = None
        self.fail = False

    async def find_api_key(self, secret_hash: str) -> ApiKey | None:
        self.reads += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise StorageError("storage is closed")
        return await super().find_api_key(secret_hash)


async def add_key(store: MemoryStore, key_id: str, owner: str = "alice") -> str:
    secret = new_secret()
    key = ApiKey(key_id, owner, None, LIMITS, 1.0, "admin")
    await store.create_api_key(key, secret_hash=hash_secret(secret))
    return secret


@pytest.fixture
def store() -> CountingStore:
    return CountingStore()


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def test_a_known_key_is_read_once_then_served_from_memory(
    store: CountingStore, clock: Clock
) -> None:
    secret = await add_key(store, "key_1")
    cache = KeyCache(store, maxsize=10, ttl_seconds=1.0, clock=clock)
    for _ in range(5):
        found = await cache.lookup(secret)
        assert found is not None and found.owner_id == "alice"
    assert store.reads == 1
    assert cache.stats()["hits"] == 4 and cache.stats()["misses"] == 1


async def test_an_entry_is_read_again_after_its_seconds(store: CountingStore, clock: Clock) -> None:
    secret = await add_key(store, "key_1")
    cache = KeyCache(store, maxsize=10, ttl_seconds=1.0, clock=clock)
    await cache.lookup(secret)
    clock.now += 0.99
    await cache.lookup(secret)
    assert store.reads == 1
    clock.now += 0.02
    await cache.lookup(secret)
    assert store.reads == 2


async def test_a_key_revoked_elsewhere_stops_working_within_the_seconds(
    store: CountingStore, clock: Clock
) -> None:
    secret = await add_key(store, "key_1")
    cache = KeyCache(store, maxsize=10, ttl_seconds=1.0, clock=clock)
    assert await cache.lookup(secret) is not None
    await store.revoke_api_key("key_1", owner_id=None)  # another process, say: no forget
    clock.now += 1.0
    assert await cache.lookup(secret) is None
    reads = store.reads
    assert await cache.lookup(secret) is None  # the revoked key is remembered as such
    assert store.reads == reads


async def test_forget_makes_a_revoke_through_this_process_immediate(
    store: CountingStore, clock: Clock
) -> None:
    secret = await add_key(store, "key_1")
    cache = KeyCache(store, maxsize=10, ttl_seconds=30.0, clock=clock)
    assert await cache.lookup(secret) is not None
    await store.revoke_api_key("key_1", owner_id=None)
    cache.forget("key_1")
    assert await cache.lookup(secret) is None
    cache.forget("key_unknown")  # harmless


async def test_the_cache_holds_at_most_maxsize_keys_least_recent_out(
    store: CountingStore, clock: Clock
) -> None:
    secrets = [await add_key(store, f"key_{n}") for n in range(5)]
    cache = KeyCache(store, maxsize=3, ttl_seconds=60.0, clock=clock)
    for secret in secrets[:3]:
        await cache.lookup(secret)
    await cache.lookup(secrets[0])  # now the most recent
    await cache.lookup(secrets[3])  # evicts secrets[1]
    assert len(cache) == 3
    reads = store.reads
    await cache.lookup(secrets[0])
    assert store.reads == reads
    await cache.lookup(secrets[1])
    assert store.reads == reads + 1
    for secret in secrets:
        await cache.lookup(secret)
    assert len(cache) == 3 and cache.stats()["maxsize"] == 3


async def test_unknown_secrets_never_push_out_known_keys(
    store: CountingStore, clock: Clock
) -> None:
    secret = await add_key(store, "key_1")
    cache = KeyCache(store, maxsize=10, ttl_seconds=60.0, clock=clock, negative_size=4)
    await cache.lookup(secret)
    for _ in range(100):
        assert await cache.lookup(new_secret()) is None
    stats = cache.stats()
    assert stats["size"] == 1 and stats["unknown"] == 4
    reads = store.reads
    assert await cache.lookup(secret) is not None
    assert store.reads == reads


async def test_a_wrong_key_retried_is_answered_without_the_store(
    store: CountingStore, clock: Clock
) -> None:
    cache = KeyCache(store, maxsize=10, ttl_seconds=1.0, clock=clock)
    wrong = new_secret()
    for _ in range(10):
        assert await cache.lookup(wrong) is None
    assert store.reads == 1
    clock.now += 1.0
    await cache.lookup(wrong)
    assert store.reads == 2


async def test_text_that_is_not_a_key_never_reaches_the_store(
    store: CountingStore, clock: Clock
) -> None:
    cache = KeyCache(store, maxsize=10, ttl_seconds=1.0, clock=clock)
    for text in ["", "admin-token", "x" * 5000, "ck_short"]:
        assert await cache.lookup(text) is None
    assert store.reads == 0 and cache.stats()["unknown"] == 0


async def test_concurrent_lookups_of_one_secret_share_one_read(
    store: CountingStore, clock: Clock
) -> None:
    secret = await add_key(store, "key_1")
    cache = KeyCache(store, maxsize=10, ttl_seconds=1.0, clock=clock)
    store.gate = asyncio.Event()
    lookups = [asyncio.create_task(cache.lookup(secret)) for _ in range(20)]
    await asyncio.sleep(0)
    store.gate.set()
    found = await asyncio.wait_for(asyncio.gather(*lookups), timeout=5)
    assert {key.id for key in found if key is not None} == {"key_1"}
    assert store.reads == 1
    assert cache.stats()["loading"] == 0


async def test_one_caller_leaving_does_not_cancel_the_others_read(
    store: CountingStore, clock: Clock
) -> None:
    secret = await add_key(store, "key_1")
    cache = KeyCache(store, maxsize=10, ttl_seconds=1.0, clock=clock)
    store.gate = asyncio.Event()
    leaving = asyncio.create_task(cache.lookup(secret))
    staying = asyncio.create_task(cache.lookup(secret))
    await asyncio.sleep(0)
    leaving.cancel()
    store.gate.set()
    found = await asyncio.wait_for(staying, timeout=5)
    assert found is not None and found.id == "key_1"
    assert leaving.cancelled() and store.reads == 1


async def test_a_revoke_during_a_read_keeps_its_stale_answer_out(
    store: CountingStore, clock: Clock
) -> None:
    secret = await add_key(store, "key_1")
    cache = KeyCache(store, maxsize=10, ttl_seconds=60.0, clock=clock)
    store.gate = asyncio.Event()
    lookup = asyncio.create_task(cache.lookup(secret))
    await asyncio.sleep(0)
    cache.forget("key_1")  # a revoke committed while the read was out
    store.gate.set()
    await asyncio.wait_for(lookup, timeout=5)
    store.gate = None
    await cache.lookup(secret)
    assert store.reads == 2


async def test_a_failed_read_is_an_error_for_its_callers_and_not_kept(
    store: CountingStore, clock: Clock
) -> None:
    secret = await add_key(store, "key_1")
    cache = KeyCache(store, maxsize=10, ttl_seconds=60.0, clock=clock)
    store.fail = True
    with pytest.raises(StorageError):
        await cache.lookup(secret)
    store.fail = False
    assert await cache.lookup(secret) is not None
    assert cache.stats()["loading"] == 0


def test_bounds_must_make_sense(store: CountingStore) -> None:
    with pytest.raises(ValueError):
        KeyCache(store, maxsize=0, ttl_seconds=1.0)
    with pytest.raises(ValueError):
        KeyCache(store, maxsize=1, ttl_seconds=0)
