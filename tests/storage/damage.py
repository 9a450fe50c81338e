"""Real database files for the integrity tests, and a way to damage one."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from chatkeep.storage.sqlite import SQLiteStore


async def make_database(path: Path, conversations: int = 300) -> None:
    """A real database of many pages (each message small: no overflow pages)."""
    store = SQLiteStore(path)
    await store.open()
    try:
        for n in range(conversations):
            conversation = await store.create_conversation("o", model="echo", title=f"t{n}")
            start = await store.begin_reply(
                "o", conversation.id, content=f"message {n} " * 8, client_message_id=f"c{n}"
            )
            await store.finish_reply(
                "o",
                conversation.id,
                reply_to=start.user_message.id,
                content=f"reply {n} " * 8,
                status="complete",
            )
    finally:
        await store.close()  # the last close checkpoints the WAL into the file


def corrupt_middle_page(path: Path) -> None:
    with sqlite3.connect(path) as raw:
        page_size = raw.execute("PRAGMA page_size").fetchone()[0]
        pages = raw.execute("PRAGMA page_count").fetchone()[0]
    raw.close()
    assert pages > 20, "the database must span many pages for this test to mean anything"
    with path.open("r+b") as file:
        file.seek(page_size * (pages // 2))
        file.write(bytes(range(256)) * (page_size // 256))
