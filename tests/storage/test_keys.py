"""The API-key part of the storage contract, on every backend."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatkeep.auth.secrets import hash_secret, new_secret
from chatkeep.domain.keys import ADMIN_CREATOR, ApiKey, KeyLimits
from chatkeep.errors import Conflict, InvalidRequest, NotFound, StorageError
from chatkeep.storage.base import Store
from chatkeep.storage.sqlite import SQLiteStore
from tests.storage.conftest import SteppingClock

LIMITS = KeyLimits(rate=5.0, burst=10, max_streams=2, priority=3, models=("echo", "gated"))


def make_key(key_id: str, owner: str, at: float, **changes: object) -> ApiKey:
    values: dict[str, object] = {
        "id": key_id,
        "owner_id": owner,
        "label": f"label of {key_id}",
        "limits": LIMITS,
        "created_at": at,
        "created_by": ADMIN_CREATOR,
    }
    values.update(changes)
    return ApiKey(**values)  # type: ignore[arg-type]


async def test_a_created_key_is_found_by_the_hash_of_its_secret(store: Store) -> None:
    secret = new_secret()
    key = make_key("key_1", "alice", 100.0)
    await store.create_api_key(key, secret_hash=hash_secret(secret))
    assert await store.find_api_key(hash_secret(secret)) == key
    assert await store.find_api_key(hash_secret(new_secret())) is None


async def test_every_field_reads_back_including_unrestricted_models(store: Store) -> None:
    everything = make_key(
        "key_2",
        "bob",
        101.5,
        label=None,
        limits=KeyLimits(rate=0.5, burst=1, max_streams=1, priority=9, models=None),
        created_by="key_1",
    )
    await store.create_api_key(everything, secret_hash=hash_secret("ck_b"))
    found = await store.find_api_key(hash_secret("ck_b"))
    assert found == everything
    assert found is not None and found.limits.models is None and not found.revoked


async def test_a_second_key_with_the_same_id_or_hash_is_refused(store: Store) -> None:
    await store.create_api_key(make_key("key_1", "alice", 1.0), secret_hash="h1")
    with pytest.raises(Conflict):
        await store.create_api_key(make_key("key_1", "alice", 2.0), secret_hash="h2")
    with pytest.raises(Conflict):
        await store.create_api_key(make_key("key_2", "alice", 2.0), secret_hash="h1")
    assert await store.find_api_key("h2") is None


async def test_listing_pages_newest_first_per_owner_or_for_all(store: Store) -> None:
    for n in range(5):
        await store.create_api_key(make_key(f"key_a{n}", "alice", 10.0 + n), secret_hash=f"a{n}")
        await store.create_api_key(make_key(f"key_b{n}", "bob", 10.5 + n), secret_hash=f"b{n}")

    seen: list[str] = []
    cursor = None
    while True:
        page = await store.list_api_keys("alice", limit=2, cursor=cursor)
        seen.extend(key.id for key in page.items)
        assert len(page.items) <= 2
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == [f"key_a{n}" for n in reversed(range(5))]

    everyone = await store.list_api_keys(None, limit=100, cursor=None)
    assert [key.id for key in everyone.items][:3] == ["key_b4", "key_a4", "key_b3"]
    assert len(everyone.items) == 10 and everyone.next_cursor is None
    assert (await store.list_api_keys("carol", limit=10, cursor=None)).items == []


async def test_keys_created_in_the_same_instant_page_without_loss(store: Store) -> None:
    for n in range(4):
        await store.create_api_key(make_key(f"key_{n}", "alice", 7.0), secret_hash=f"h{n}")
    first = await store.list_api_keys("alice", limit=3, cursor=None)
    assert first.next_cursor is not None
    rest = await store.list_api_keys("alice", limit=3, cursor=first.next_cursor)
    ids = [key.id for key in first.items + rest.items]
    assert sorted(ids) == [f"key_{n}" for n in range(4)] and rest.next_cursor is None


async def test_a_forged_cursor_is_a_client_error(store: Store) -> None:
    with pytest.raises(InvalidRequest):
        await store.list_api_keys(None, limit=10, cursor="not-a-cursor")


async def test_revoke_marks_once_and_find_still_answers(store: Store, clock: SteppingClock) -> None:
    await store.create_api_key(make_key("key_1", "alice", 1.0), secret_hash="h1")
    revoked = await store.revoke_api_key("key_1", owner_id="alice")
    assert revoked.revoked and revoked.revoked_at is not None
    assert revoked.revoked_at <= clock.now
    again = await store.revoke_api_key("key_1", owner_id=None)
    assert again.revoked_at == revoked.revoked_at
    assert await store.find_api_key("h1") == revoked
    listed = await store.list_api_keys("alice", limit=10, cursor=None)
    assert listed.items == [revoked]


async def test_another_owners_key_is_not_found_and_stays_valid(store: Store) -> None:
    await store.create_api_key(make_key("key_1", "alice", 1.0), secret_hash="h1")
    with pytest.raises(NotFound):
        await store.revoke_api_key("key_1", owner_id="mallory")
    with pytest.raises(NotFound):
        await store.revoke_api_key("key_missing", owner_id=None)
    found = await store.find_api_key("h1")
    assert found is not None and not found.revoked


async def test_the_secret_is_never_in_the_database_file(store: Store) -> None:
    if not isinstance(store, SQLiteStore):
        pytest.skip("only SQLite writes a file")
    secret = new_secret()
    await store.create_api_key(make_key("key_1", "alice", 1.0), secret_hash=hash_secret(secret))
    await store.close()
    data = b"".join(f.read_bytes() for f in store.path.parent.glob(f"{store.path.name}*"))
    assert hash_secret(secret).encode() in data
    assert secret.encode() not in data
    assert secret[3:].encode() not in data


async def test_an_owner_holds_at_most_max_active_unrevoked_keys(store: Store) -> None:
    for n in range(3):
        await store.create_api_key(
            make_key(f"key_a{n}", "alice", 100.0 + n), secret_hash=f"hash-a{n}", max_active=3
        )
    with pytest.raises(Conflict, match="3 active keys"):
        await store.create_api_key(
            make_key("key_a3", "alice", 200.0), secret_hash="hash-a3", max_active=3
        )
    # Another owner has a bound of their own; a revoke makes room.
    await store.create_api_key(make_key("key_b0", "bob", 200.0), secret_hash="b", max_active=3)
    await store.revoke_api_key("key_a0", owner_id="alice")
    await store.create_api_key(make_key("key_a3", "alice", 300.0), secret_hash="a3", max_active=3)
    assert await store.find_api_key("a3") is not None


async def test_a_shared_store_refuses_crash_recovery(tmp_path: Path) -> None:
    shared = SQLiteStore(tmp_path / "chatkeep.sqlite3", shared=True)
    await shared.open()
    try:
        with pytest.raises(StorageError, match="shared"):
            await shared.recover_open_replies()
    finally:
        await shared.close()
