"""The SQLite store: WAL, ``synchronous=FULL`` by default, group commit, reader pool.

Writes go through one writer connection (`GroupCommitter`); reads use a small
pool of reader connections, which WAL lets run while a write commits. Every
statement runs on a connection's own thread, never on the event loop.

`open` locks the data directory (`lock.DataDirLock`) before it touches the database,
then refuses a damaged file (`integrity`), then migrates: nothing, recovery included,
runs on a database another process is using or one that is broken.

A store opened with ``shared=True`` takes no lock: it is for short-lived tools
(`chatkeep keys …`) that write next to a running server, which WAL and ``busy_timeout``
allow. Such a store must never run `recover_open_replies`: the open replies it would
find are the running server's.
"""

from __future__ import annotations

import itertools
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import orjson

from chatkeep.domain import replies
from chatkeep.domain.records import (
    Conversation,
    ConversationStatus,
    Message,
    MessageStatus,
    Page,
    Usage,
)
from chatkeep.errors import StorageError
from chatkeep.storage.base import (
    RECOVERED_REASON,
    UNSET,
    ReplyStart,
    Store,
    decode_cursor,
    encode_cursor,
    new_id,
)
from chatkeep.storage.sqlite import integrity
from chatkeep.storage.sqlite.connection import ThreadedConnection
from chatkeep.storage.sqlite.errors import driver_errors
from chatkeep.storage.sqlite.group_commit import GroupCommitter
from chatkeep.storage.sqlite.keys import SQLiteKeys
from chatkeep.storage.sqlite.lock import DataDirLock
from chatkeep.storage.sqlite.queries import (
    select_conversations,
    select_messages,
    select_recent,
)
from chatkeep.storage.sqlite.rows import (
    conversation_from_row,
    message_from_row,
)
from chatkeep.storage.sqlite.schema import migrate
from chatkeep.storage.sqlite.statements import (
    close_reply,
    delete_conversation_row,
    find_replay,
    insert_conversation,
    insert_message,
    load_conversation,
    open_replies,
    save_conversation_counters,
    update_conversation_row,
)
from chatkeep.storage.sqlite.transfer import SQLiteTransfer

DATABASE_FILE = "chatkeep.sqlite3"


class SQLiteStore(SQLiteKeys, SQLiteTransfer, Store):
    """Conversations in one SQLite database file under the data directory."""

    def __init__(
        self,
        path: Path,
        *,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        busy_timeout_ms: int = 5000,
        readers: int = 2,
        clock: Callable[[], float] = time.time,
        new_id: Callable[[str], str] = new_id,
        shared: bool = False,
    ) -> None:
        self.path = path
        self._shared = shared
        self._clock = clock
        self._new_id = new_id
        self._lock = DataDirLock(path.parent)
        pragmas = [
            f"PRAGMA busy_timeout = {int(busy_timeout_ms)}",
            "PRAGMA journal_mode = WAL",
            f"PRAGMA synchronous = {synchronous}",
            "PRAGMA foreign_keys = ON",
        ]
        self._writer = ThreadedConnection(path, name="sqlite-writer", pragmas=pragmas)
        self._readers = [
            ThreadedConnection(path, name=f"sqlite-reader-{n}", pragmas=pragmas)
            for n in range(readers)
        ]
        self._next_reader = itertools.cycle(self._readers)
        self._committer = GroupCommitter(self._writer)
        self._open = False

    async def open(self) -> None:
        """Lock the data directory, check the file, migrate, connect the readers.

        Raises `DataDirLocked` when another process uses the directory (then the
        database was not even opened) and `DatabaseDamaged` when the file is not a
        database or fails ``PRAGMA quick_check``; either way no migration or recovery ran.
        A ``shared`` store skips the lock (migrations still run, each in its transaction).
        """
        try:
            if not self._shared:
                self._lock.acquire()
            with driver_errors(f"opening {self.path}"):
                try:
                    await self._writer.connect()
                except sqlite3.DatabaseError as exc:
                    if integrity.is_damage(exc):
                        raise integrity.damaged(self.path, [str(exc)]) from exc
                    raise
                findings = await self._writer.run(integrity.check)
                if findings:
                    raise integrity.damaged(self.path, findings)
                await self._writer.run(migrate)
                for reader in self._readers:
                    await reader.connect()
        except BaseException:
            await self._close_connections()
            self._lock.release()
            raise
        self._committer.observer = self.commit_observer
        self._committer.start()
        self._open = True

    async def close(self) -> None:
        """Commit the queued writes, close every connection, release the lock. Safe twice."""
        self._open = False
        await self._committer.close()
        await self._close_connections()
        self._lock.release()

    async def _close_connections(self) -> None:
        for connection in [*self._readers, self._writer]:
            await connection.close()

    def stats(self) -> dict[str, Any]:
        commits, writes = self.commit_stats
        return {
            "backend": "sqlite",
            "path": str(self.path),
            "commits": commits,
            "writes": writes,
            "writes_per_commit": round(writes / commits, 2) if commits else None,
            "readers": len(self._readers),
        }

    @property
    def commit_stats(self) -> tuple[int, int]:
        """(transactions committed, writes committed): their ratio is the group size."""
        return self._committer.commits, self._committer.writes

    async def _read(self, fn: Any) -> Any:
        if not self._open:  # a request racing the shutdown gets a 503, not a crash
            raise StorageError("storage is closed")
        with driver_errors("read"):
            return await next(self._next_reader).run(fn)

    # -- conversations -------------------------------------------------------------

    async def create_conversation(
        self,
        owner_id: str,
        *,
        model: str,
        title: str | None = None,
        system_prompt: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Conversation:
        now = self._clock()
        conversation = Conversation(
            id=self._new_id("conv"),
            owner_id=owner_id,
            title=title,
            model=model,
            system_prompt=system_prompt,
            metadata=metadata or {},
            status="active",
            created_at=now,
            updated_at=now,
            last_activity=now,
        )

        await self._committer.write(lambda conn: insert_conversation(conn, conversation))
        return conversation

    async def get_conversation(self, owner_id: str, conversation_id: str) -> Conversation:
        conversation: Conversation = await self._read(
            lambda conn: load_conversation(conn, owner_id, conversation_id)
        )
        return conversation

    async def list_conversations(
        self,
        owner_id: str,
        *,
        status: ConversationStatus | None,
        limit: int,
        cursor: str | None,
    ) -> Page[Conversation]:
        after = decode_cursor(cursor, float, str) if cursor is not None else None
        rows = await self._read(
            lambda conn: select_conversations(
                conn, owner_id, status=status, after=after, limit=limit + 1
            )
        )
        items = [conversation_from_row(row) for row in rows[:limit]]
        next_cursor = None
        if len(rows) > limit:
            next_cursor = encode_cursor(items[-1].created_at, items[-1].id)
        return Page(items, next_cursor)

    async def update_conversation(
        self,
        owner_id: str,
        conversation_id: str,
        *,
        title: str | None = UNSET,
        status: ConversationStatus = UNSET,
        metadata: dict[str, Any] = UNSET,
    ) -> Conversation:
        changes: dict[str, Any] = {}
        if title is not UNSET:
            changes["title"] = title
        if status is not UNSET:
            changes["status"] = status
        if metadata is not UNSET:
            changes["metadata"] = orjson.dumps(metadata).decode()

        def update(conn: sqlite3.Connection) -> Conversation:
            changes["updated_at"] = self._clock()
            return update_conversation_row(conn, owner_id, conversation_id, changes)

        updated: Conversation = await self._committer.write(update)
        return updated

    async def delete_conversation(self, owner_id: str, conversation_id: str) -> None:
        await self._committer.write(
            lambda conn: delete_conversation_row(conn, owner_id, conversation_id)
        )

    # -- messages ------------------------------------------------------------------

    async def list_messages(
        self,
        owner_id: str,
        conversation_id: str,
        *,
        limit: int,
        after: int | None = None,
        before: int | None = None,
    ) -> Page[Message]:
        backwards = before is not None and after is None
        rows = await self._read(
            lambda conn: select_messages(
                conn, owner_id, conversation_id, after=after, before=before, limit=limit + 1
            )
        )
        items = [message_from_row(row) for row in rows[:limit]]
        more = len(rows) > limit
        if backwards:
            items.reverse()
        next_cursor = None
        if more and items:
            next_cursor = str(items[0].seq if backwards else items[-1].seq)
        return Page(items, next_cursor)

    async def recent_messages(
        self, owner_id: str, conversation_id: str, *, limit: int, before: int | None = None
    ) -> list[Message]:
        rows = await self._read(
            lambda conn: select_recent(conn, owner_id, conversation_id, limit=limit, before=before)
        )
        return [message_from_row(row) for row in rows]

    async def find_send(
        self,
        owner_id: str,
        conversation_id: str,
        client_message_id: str,
        fingerprint: str | None = None,
    ) -> ReplyStart | None:
        def find(conn: sqlite3.Connection) -> ReplyStart | None:
            conversation = load_conversation(conn, owner_id, conversation_id)
            return find_replay(conn, conversation, client_message_id, fingerprint)

        found: ReplyStart | None = await self._read(find)
        return found

    async def begin_reply(
        self,
        owner_id: str,
        conversation_id: str,
        *,
        content: str,
        client_message_id: str | None,
        fingerprint: str | None = None,
    ) -> ReplyStart:
        def begin(conn: sqlite3.Connection) -> ReplyStart:
            conversation = load_conversation(conn, owner_id, conversation_id)
            if client_message_id is not None:
                replay = find_replay(conn, conversation, client_message_id, fingerprint)
                if replay is not None:
                    return replay
            replies.check_can_begin(conversation)
            message = replies.user_message(
                conversation,
                content=content,
                client_message_id=client_message_id,
                now=self._clock(),
                new_id=self._new_id,
            )
            insert_message(conn, message, fingerprint)
            opened = replies.after_send(conversation, message)
            save_conversation_counters(conn, opened)
            return ReplyStart(opened, message, replayed=False)

        start: ReplyStart = await self._committer.write(begin)
        return start

    async def finish_reply(
        self,
        owner_id: str,
        conversation_id: str,
        *,
        reply_to: str,
        content: str,
        status: MessageStatus,
        reason: str | None = None,
        usage: Usage | None = None,
        reason_code: str | None = None,
    ) -> Message:
        def finish(conn: sqlite3.Connection) -> Message:
            conversation = load_conversation(conn, owner_id, conversation_id)
            replies.check_can_finish(conversation, reply_to)
            message = replies.assistant_message(
                conversation,
                content=content,
                status=status,
                reason=reason,
                usage=usage,
                now=self._clock(),
                new_id=self._new_id,
                reason_code=reason_code,
            )
            close_reply(conn, conversation, message)
            return message

        message: Message = await self._committer.write(finish)
        return message

    async def set_summary(
        self, owner_id: str, conversation_id: str, *, summary: str, through_seq: int
    ) -> None:
        def store(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE conversations SET summary = ?, summary_through_seq = ? "
                "WHERE id = ? AND owner_id = ? AND summary_through_seq < ?",
                (summary, through_seq, conversation_id, owner_id, through_seq),
            )

        await self._committer.write(store)

    async def recover_open_replies(self, reason: str = RECOVERED_REASON) -> int:
        if self._shared:
            # Without the lock, the "open" replies may be a running server's live ones.
            raise StorageError(
                "a shared store (a tool beside a server) must not close open replies"
            )

        def recover(conn: sqlite3.Connection) -> int:
            opened = open_replies(conn)
            now = self._clock()
            for conversation in opened:
                message = replies.assistant_message(
                    conversation,
                    content="",
                    status="incomplete",
                    reason=reason,
                    usage=None,
                    now=now,
                    new_id=self._new_id,
                )
                close_reply(conn, conversation, message)
            return len(opened)

        recovered: int = await self._committer.write(recover)
        return recovered

    async def integrity_check(self) -> str:
        findings: list[str] = await self._read(lambda conn: integrity.check(conn, full=True))
        return "\n".join(findings) or "ok"
