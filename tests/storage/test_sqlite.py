"""SQLite-only behaviour: durability settings, group commit, migrations, reopening."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from chatkeep.domain.replies import send_fingerprint
from chatkeep.storage.sqlite import SQLiteStore
from chatkeep.storage.sqlite.schema import MIGRATIONS


async def test_wal_and_full_sync_by_default(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "db.sqlite3")
    await store.open()
    try:
        mode = await store._writer.run(lambda c: c.execute("PRAGMA journal_mode").fetchone()[0])
        sync = await store._writer.run(lambda c: c.execute("PRAGMA synchronous").fetchone()[0])
    finally:
        await store.close()
    assert mode == "wal"
    assert sync == 2  # FULL


async def test_data_survives_reopen_and_schema_is_versioned(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    store = SQLiteStore(path)
    await store.open()
    created = await store.create_conversation("o", model="echo", title="kept")
    await store.close()
    await store.close()  # closing twice is safe

    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)

    again = SQLiteStore(path)
    await again.open()
    try:
        assert (await again.get_conversation("o", created.id)).title == "kept"
    finally:
        await again.close()


async def test_concurrent_writes_share_commits(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "db.sqlite3")
    await store.open()
    try:
        await asyncio.gather(*(store.create_conversation("o", model="echo") for _ in range(200)))
        commits, writes = store.commit_stats
    finally:
        await store.close()
    assert writes == 200
    assert commits < writes  # group commit batched some of them


async def test_failed_write_does_not_undo_its_batch(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "db.sqlite3")
    await store.open()
    try:
        good = await store.create_conversation("o", model="echo")
        results = await asyncio.gather(
            store.create_conversation("o", model="echo"),
            store.delete_conversation("o", "conv_missing"),
            store.update_conversation("o", good.id, title="still applied"),
            return_exceptions=True,
        )
        assert isinstance(results[1], Exception)
        assert (await store.get_conversation("o", good.id)).title == "still applied"
    finally:
        await store.close()


async def test_sends_stored_before_fingerprints_still_replay(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    with sqlite3.connect(path) as raw:  # a database as version 1 of the schema left it
        raw.executescript(MIGRATIONS[0])
        raw.execute("PRAGMA user_version = 1")
        raw.execute(
            "INSERT INTO conversations (id, owner_id, model, created_at, updated_at, "
            "last_activity, message_count) VALUES ('conv_old', 'o', 'echo', 1, 1, 1, 1)"
        )
        raw.execute(
            "INSERT INTO messages (conversation_id, seq, id, role, content, status, "
            "created_at, client_message_id) "
            "VALUES ('conv_old', 1, 'msg_old', 'user', 'hi', 'complete', 1, 'k')"
        )
    raw.close()
    store = SQLiteStore(path)
    await store.open()
    try:
        again = await store.begin_reply(
            "o", "conv_old", content="hi", client_message_id="k", fingerprint=send_fingerprint("hi")
        )
    finally:
        await store.close()
    assert again.replayed and again.user_message.id == "msg_old"
