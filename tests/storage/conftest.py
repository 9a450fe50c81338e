"""The storage contract suite runs once per backend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from chatkeep.storage.base import Store
from chatkeep.storage.memory import MemoryStore
from chatkeep.storage.sqlite import SQLiteStore


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    backend: Store
    if request.param == "memory":
        backend = MemoryStore()
    else:
        backend = SQLiteStore(tmp_path / "chatkeep.sqlite3")
    await backend.open()
    try:
        yield backend
    finally:
        await backend.close()
