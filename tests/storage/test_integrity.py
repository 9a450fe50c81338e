"""A damaged database is refused at startup, and `integrity_check` names the damage."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatkeep.errors import DatabaseDamaged, StorageError
from chatkeep.storage.sqlite import SQLiteStore
from chatkeep.storage.sqlite.integrity import check_file
from tests.storage.damage import corrupt_middle_page, make_database


async def test_damaged_database_refuses_to_open(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    await make_database(path)
    corrupt_middle_page(path)
    for _ in range(2):  # a refused open leaves no lock behind
        store = SQLiteStore(path)
        with pytest.raises(DatabaseDamaged) as refused:
            await store.open()
        await store.close()
        assert isinstance(refused.value, StorageError)
        assert str(path) in refused.value.message
        assert "backup" in refused.value.message and "chatkeep check" in refused.value.message
    assert check_file(path) != []


async def test_sound_database_checks_ok(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    await make_database(path, conversations=5)
    assert check_file(path) == []
    store = SQLiteStore(path)
    await store.open()
    try:
        assert await store.integrity_check() == "ok"
    finally:
        await store.close()


async def test_a_file_that_is_not_a_database_is_damage(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    path.write_bytes(b"this is not a database, whatever its name says" * 200)
    store = SQLiteStore(path)
    with pytest.raises(DatabaseDamaged, match="not a database"):
        await store.open()
    await store.close()
