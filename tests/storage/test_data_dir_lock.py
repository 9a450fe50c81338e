"""One process per data directory: a second store refuses before it touches the database."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from chatkeep.errors import DataDirLocked, StorageError
from chatkeep.storage.sqlite import SQLiteStore
from chatkeep.storage.sqlite.lock import LOCK_FILE


async def test_second_store_on_a_locked_directory_refuses(tmp_path: Path) -> None:
    first = SQLiteStore(tmp_path / "db.sqlite3")
    await first.open()
    try:
        conversation = await first.create_conversation("o", model="echo")
        start = await first.begin_reply("o", conversation.id, content="q", client_message_id=None)
        second = SQLiteStore(tmp_path / "db.sqlite3")
        with pytest.raises(DataDirLocked) as refused:
            await second.open()
        assert isinstance(refused.value, StorageError)
        assert str(tmp_path / LOCK_FILE) in refused.value.message
        assert f"process {os.getpid()}" in refused.value.message
        await second.close()
        # The refused store ran no recovery: the first store's reply is still open.
        reply = await first.finish_reply(
            "o", conversation.id, reply_to=start.user_message.id, content="a", status="complete"
        )
        assert reply.status == "complete"
    finally:
        await first.close()


async def test_closing_releases_the_lock(tmp_path: Path) -> None:
    first = SQLiteStore(tmp_path / "db.sqlite3")
    await first.open()
    await first.close()
    again = SQLiteStore(tmp_path / "db.sqlite3")
    await again.open()
    await again.close()


async def test_lock_file_names_its_holder(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "db.sqlite3")
    await store.open()
    try:
        assert (tmp_path / LOCK_FILE).read_text().strip() == str(os.getpid())
    finally:
        await store.close()


async def test_an_unusable_data_directory_is_a_storage_error(tmp_path: Path) -> None:
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("")
    store = SQLiteStore(not_a_directory / "db.sqlite3")
    with pytest.raises(StorageError, match="cannot create the lock"):
        await store.open()
    await store.close()
