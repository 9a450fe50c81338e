"""The API-key part of the storage contract, on every backend."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from chatkeep.auth.secrets import hash_secret, new_secret
from chatkeep.domain.keys import ADMIN_CREATOR, ApiKey, FamilyBudget, KeyLimits
from chatkeep.errors import Conflict, Forbidden, InvalidRequest, NotFound, StorageError
from chatkeep.storage.base import Store
from chatkeep.storage.sqlite import SQLiteStore
from chatkeep.storage.sqlite.schema import MIGRATIONS
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
    maker = make_key("key_1", "bob", 100.0)
    await store.create_api_key(maker, secret_hash=hash_secret("ck_a"))
    everything = make_key(
        "key_2",
        "bob",
        101.5,
        label=None,
        limits=KeyLimits(rate=0.5, burst=1, max_streams=1, priority=9, models=None),
        created_by="key_1",
        family_id="key_1",
        family_budget=FamilyBudget(rate=5.0, burst=10, max_streams=2),
    )
    await store.create_api_key(everything, secret_hash=hash_secret("ck_b"))
    found = await store.find_api_key(hash_secret("ck_b"))
    assert found == everything
    assert found is not None and found.limits.models is None and not found.revoked
    assert found.family == "key_1" and found.family_budget == FamilyBudget(5.0, 10, 2)
    root = await store.find_api_key(hash_secret("ck_a"))
    assert root is not None and root.family_id is None and root.family_budget is None
    assert root.family == "key_1"


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
    revoked = (await store.revoke_api_key("key_1", owner_id="alice")).key
    assert revoked.revoked and revoked.revoked_at is not None
    assert revoked.revoked_at <= clock.now
    again = await store.revoke_api_key("key_1", owner_id=None)
    assert again.key.revoked_at == revoked.revoked_at and again.ids == ("key_1",)
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


async def make_tree(store: Store) -> dict[str, ApiKey]:
    """alice: root → (child → grandchild, sibling); plus other, another root of alice's."""
    keys: dict[str, ApiKey] = {}

    async def add(key_id: str, maker: str | None, at: float) -> None:
        changes: dict[str, object] = {}
        if maker is not None:
            family, budget = keys[maker].family_of_its_keys()
            changes = {"created_by": maker, "family_id": family, "family_budget": budget}
        keys[key_id] = make_key(key_id, "alice", at, **changes)
        await store.create_api_key(keys[key_id], secret_hash=f"hash-{key_id}")

    await add("root", None, 1.0)
    await add("other", None, 2.0)
    await add("child", "root", 3.0)
    await add("sibling", "root", 4.0)
    await add("grandchild", "child", 5.0)
    return keys


async def test_revoking_a_key_revokes_every_key_it_made_at_any_depth(store: Store) -> None:
    await make_tree(store)
    await store.revoke_api_key("grandchild", owner_id="alice")
    before = await store.find_api_key("hash-grandchild")
    assert before is not None and before.revoked_at is not None

    revoked = await store.revoke_api_key("root", owner_id="alice")
    assert revoked.key.id == "root" and revoked.key.revoked
    assert sorted(revoked.ids) == ["child", "grandchild", "root", "sibling"]
    for key_id in ("child", "sibling", "grandchild"):
        found = await store.find_api_key(f"hash-{key_id}")
        assert found is not None and found.revoked, key_id
    kept = await store.find_api_key("hash-grandchild")
    assert kept is not None and kept.revoked_at == before.revoked_at  # revoked once
    other = await store.find_api_key("hash-other")
    assert other is not None and not other.revoked


async def test_revoking_a_key_leaves_its_maker_and_siblings(store: Store) -> None:
    await make_tree(store)
    revoked = await store.revoke_api_key("child", owner_id=None)
    assert sorted(revoked.ids) == ["child", "grandchild"]
    for key_id in ("root", "sibling", "other"):
        found = await store.find_api_key(f"hash-{key_id}")
        assert found is not None and not found.revoked, key_id


async def test_within_a_key_only_that_key_and_its_descendants_are_seen(store: Store) -> None:
    await make_tree(store)
    page = await store.list_api_keys("alice", limit=10, cursor=None, within="child")
    assert [key.id for key in page.items] == ["grandchild", "child"]
    seen: list[str] = []
    cursor = None
    while True:
        page = await store.list_api_keys("alice", limit=1, cursor=cursor, within="root")
        seen.extend(key.id for key in page.items)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == ["grandchild", "sibling", "child", "root"]
    mallory = await store.list_api_keys("mallory", limit=10, cursor=None, within="root")
    assert mallory.items == []


async def test_within_a_key_anything_outside_its_descendants_is_not_found(store: Store) -> None:
    await make_tree(store)
    for key_id in ("root", "sibling", "other", "key_missing"):
        with pytest.raises(NotFound):
            await store.revoke_api_key(key_id, owner_id="alice", within="child")
    with pytest.raises(NotFound):
        await store.revoke_api_key("grandchild", owner_id="mallory", within="child")
    for key_id in ("root", "sibling", "other"):
        found = await store.find_api_key(f"hash-{key_id}")
        assert found is not None and not found.revoked, key_id
    revoked = await store.revoke_api_key("grandchild", owner_id="alice", within="child")
    assert revoked.ids == ("grandchild",)
    itself = await store.revoke_api_key("child", owner_id="alice", within="child")
    assert itself.key.revoked and itself.ids == ("child", "grandchild")


async def test_a_revoked_or_missing_maker_makes_no_key(store: Store) -> None:
    keys = await make_tree(store)
    await store.revoke_api_key("child", owner_id="alice")
    family, budget = keys["child"].family_of_its_keys()
    late = make_key(
        "late", "alice", 9.0, created_by="child", family_id=family, family_budget=budget
    )
    with pytest.raises(Forbidden, match="revoked"):
        await store.create_api_key(late, secret_hash="hash-late")
    orphan = make_key(
        "orphan", "alice", 9.0, created_by="key_gone", family_id="root", family_budget=budget
    )
    with pytest.raises(Forbidden):
        await store.create_api_key(orphan, secret_hash="hash-orphan")
    assert await store.find_api_key("hash-late") is None
    assert await store.find_api_key("hash-orphan") is None


async def test_keys_stored_before_families_are_given_theirs(tmp_path: Path) -> None:
    path = tmp_path / "chatkeep.sqlite3"
    with sqlite3.connect(path) as raw:  # a database as version 4 of the schema left it
        for migration in MIGRATIONS[:4]:
            raw.executescript(migration)
        raw.execute("PRAGMA user_version = 4")
        for key_id, rate, created_by in [
            ("root", 2.0, "admin"),
            ("child", 1.0, "root"),
            ("grandchild", 0.5, "child"),
            ("alone", 9.0, "admin"),
        ]:
            raw.execute(
                "INSERT INTO api_keys (id, owner_id, secret_hash, rate, burst, max_streams, "
                "priority, created_by, created_at) VALUES (?, 'alice', ?, ?, 3, 4, 0, ?, 1.0)",
                (key_id, f"hash-{key_id}", rate, created_by),
            )
    raw.close()
    store = SQLiteStore(path)
    await store.open()
    try:
        found = {k: await store.find_api_key(f"hash-{k}") for k in ("root", "grandchild", "alone")}
    finally:
        await store.close()
    root, grandchild, alone = found["root"], found["grandchild"], found["alone"]
    assert root is not None and root.family_id is None and root.family_budget is None
    assert alone is not None and alone.family == "alone"
    assert grandchild is not None and grandchild.family_id == "root"
    assert grandchild.family_budget == FamilyBudget(rate=2.0, burst=3, max_streams=4)
