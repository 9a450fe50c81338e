"""Fill a chatkeep SQLite data directory with conversations, fast.

Runs the store directly (no server, no HTTP), so creating 100 000 conversations takes
seconds; `memory.py` runs it in a separate process before starting the server, and then
touches every conversation through the HTTP API. With ``--turns N`` each conversation
also gets N earlier exchanges (a user message and its echo reply), as `leak.py` uses to
start from conversations with history. Writes the new ids, one a line.

    python bench/memory_populate.py DATA_DIR COUNT IDS_FILE [--turns N]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

from chatkeep.domain.records import Usage
from chatkeep.storage.sqlite import DATABASE_FILE, SQLiteStore
from leak_workload import message_text

#: Creates in flight at once; the store's group commit puts them in shared transactions.
BATCH = 1000


async def add_turns(store: SQLiteStore, owner: str, conversation_id: str, turns: int) -> None:
    """Store ``turns`` exchanges in one conversation, as a server would have."""
    for turn in range(turns):
        content = message_text(turn)
        start = await store.begin_reply(
            owner, conversation_id, content=content, client_message_id=None
        )
        await store.finish_reply(
            owner,
            conversation_id,
            reply_to=start.user_message.id,
            content=f"echo: {content}",
            status="complete",
            usage=Usage(len(content) // 4, len(content) // 4),
        )


async def populate(data_dir: Path, count: int, turns: int = 0, owner: str = "default") -> list[str]:
    """Create ``count`` conversations owned by ``owner``; return their ids."""
    store = SQLiteStore(data_dir / DATABASE_FILE, synchronous="NORMAL")
    await store.open()
    ids: list[str] = []
    try:
        for start in range(0, count, BATCH):
            size = min(BATCH, count - start)
            created = await asyncio.gather(
                *(
                    store.create_conversation(owner, model="echo", title=f"bench {start + n}")
                    for n in range(size)
                )
            )
            batch = [conversation.id for conversation in created]
            if turns:
                await asyncio.gather(*(add_turns(store, owner, cid, turns) for cid in batch))
            ids.extend(batch)
    finally:
        await store.close()
    return ids


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("count", type=int)
    parser.add_argument("ids_file", type=Path)
    parser.add_argument("--turns", type=int, default=0, help="earlier exchanges in each")
    args = parser.parse_args()
    began = time.monotonic()
    ids = asyncio.run(populate(args.data_dir, args.count, args.turns))
    args.ids_file.write_text("\n".join(ids) + "\n")
    print(f"created {len(ids)} conversations in {time.monotonic() - began:.1f} s")


if __name__ == "__main__":
    main()
