"""A damaged database: ``serve`` refuses to start and says what to do, in one line."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from chatkeep.storage.sqlite import DATABASE_FILE
from tests.e2e.server import free_port
from tests.e2e.test_data_dir_lock import serve
from tests.storage.damage import corrupt_middle_page, make_database

pytestmark = pytest.mark.e2e


async def test_serve_on_a_damaged_database_refuses_with_what_to_do(tmp_path: Path) -> None:
    data = tmp_path / "data"
    path = data / DATABASE_FILE
    await make_database(path)
    corrupt_middle_page(path)
    started = await asyncio.to_thread(serve, data, free_port())
    output = started.stdout + started.stderr
    assert started.returncode != 0, output
    assert "is damaged" in output and "chatkeep check" in output
    assert "Traceback" not in output
