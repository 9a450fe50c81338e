"""The storage alone: durable sends per second through `SQLiteStore`, no HTTP, and the
cost of one `synchronous=FULL` commit on this disk.

    .venv/bin/python bench/store.py [--senders 32] [--sends 100]
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import tempfile
import time
from pathlib import Path

from chatkeep.storage.sqlite import SQLiteStore


async def store_sends(senders: int, sends: int, directory: Path) -> tuple[float, dict[str, object]]:
    """Sends per second with ``senders`` concurrent conversations, each a begin + finish."""
    store = SQLiteStore(directory / "store.sqlite3")
    await store.open()
    try:
        conversations = [await store.create_conversation("o", model="echo") for _ in range(senders)]

        async def sender(conversation_id: str) -> None:
            for _ in range(sends):
                start = await store.begin_reply(
                    "o", conversation_id, content="hello there", client_message_id=None
                )
                await store.finish_reply(
                    "o",
                    conversation_id,
                    reply_to=start.user_message.id,
                    content="echo: hello there",
                    status="complete",
                )

        began = time.perf_counter()
        await asyncio.gather(*(sender(c.id) for c in conversations))
        elapsed = time.perf_counter() - began
        return senders * sends / elapsed, store.stats()
    finally:
        await store.close()


def single_commit_ms(directory: Path, commits: int = 300) -> float:
    """Milliseconds of one single-row commit in WAL mode with ``synchronous=FULL``."""
    connection = sqlite3.connect(directory / "commit.sqlite3", isolation_level=None)
    try:
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("PRAGMA synchronous = FULL")
        connection.execute("CREATE TABLE t (x INTEGER)")
        began = time.perf_counter()
        for n in range(commits):
            connection.execute("BEGIN IMMEDIATE")
            connection.execute("INSERT INTO t VALUES (?)", (n,))
            connection.execute("COMMIT")
        return (time.perf_counter() - began) / commits * 1000
    finally:
        connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--senders", type=int, default=32)
    parser.add_argument("--sends", type=int, default=100)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        directory = Path(name)
        rate, stats = asyncio.run(store_sends(options.senders, options.sends, directory))
        print(f"store alone: {rate:,.0f} sends/s with {options.senders} senders; {stats}")
        print(f"one synchronous=FULL commit: {single_commit_ms(directory):.3f} ms")


if __name__ == "__main__":
    main()
