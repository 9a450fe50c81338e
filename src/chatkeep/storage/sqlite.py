"""The SQLite store: WAL, ``synchronous=FULL`` by default, group commit, reader pool.

Writes go through one writer connection (`GroupCommitter`); reads use a small
pool of reader connections, which WAL lets run while a write commits. Every
statement runs on a connection's own thread, never on the event loop.
"""

from __future__ import annotations

import itertools
import sqlite3
import time
from pathlib import Path
from typing import Any, Literal

import orjson

from chatkeep.domain.records import (
    Conversation,
    ConversationStatus,
    Message,
    MessageStatus,
    Page,
    Usage,
)
from chatkeep.errors import NotFound, ReplyInProgress, StorageError
from chatkeep.storage.base import (
    RECOVERED_REASON,
    UNSET,
    ReplyStart,
    Store,
    decode_cursor,
    encode_cursor,
    new_id,
)
from chatkeep.storage.group_commit import GroupCommitter
from chatkeep.storage.sqlite_rows import (
    CONVERSATION_COLUMNS,
    MESSAGE_COLUMNS,
    conversation_from_row,
    message_from_row,
)
from chatkeep.storage.sqlite_schema import migrate
from chatkeep.storage.sqlite_statements import (
    close_reply,
    find_replay,
    insert_message,
    load_conversation,
    require_conversation,
)
from chatkeep.storage.sqlite_thread import ThreadedConnection

DATABASE_FILE = "chatkeep.sqlite3"


class SQLiteStore(Store):
    """Conversations in one SQLite database file under the data directory."""

    def __init__(
        self,
        path: Path,
        *,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        busy_timeout_ms: int = 5000,
        readers: int = 2,
    ) -> None:
        self.path = path
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
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            await self._writer.connect()
            await self._writer.run(migrate)
            for reader in self._readers:
                await reader.connect()
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open {self.path}: {exc}") from exc
        self._committer.observer = self.commit_observer
        self._committer.start()
        self._open = True

    async def close(self) -> None:
        await self._committer.close()
        for connection in [*self._readers, self._writer]:
            await connection.close()
        self._open = False

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
        try:
            return await next(self._next_reader).run(fn)
        except sqlite3.Error as exc:
            raise StorageError(f"read failed: {exc}") from exc

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
        now = time.time()
        conversation = Conversation(
            id=new_id("conv"),
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

        def insert(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO conversations (id, owner_id, title, model, system_prompt, "
                "metadata, status, created_at, updated_at, last_activity) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    conversation.id,
                    owner_id,
                    title,
                    model,
                    system_prompt,
                    orjson.dumps(conversation.metadata).decode(),
                    "active",
                    now,
                    now,
                    now,
                ),
            )

        await self._committer.write(insert)
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
        where = ["owner_id = ?"]
        params: list[Any] = [owner_id]
        if status is not None:
            where.append("status = ?")
            params.append(status)
        if cursor is not None:
            created_at, last_id = decode_cursor(cursor, 2)
            where.append("(created_at, id) < (?, ?)")
            params.extend([created_at, last_id])
        sql = (
            f"SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE {' AND '.join(where)} "
            "ORDER BY created_at DESC, id DESC LIMIT ?"
        )
        params.append(limit + 1)
        rows = await self._read(lambda conn: conn.execute(sql, params).fetchall())
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
            load_conversation(conn, owner_id, conversation_id)
            changes["updated_at"] = time.time()
            assignments = ", ".join(f"{column} = ?" for column in changes)
            conn.execute(
                f"UPDATE conversations SET {assignments} WHERE id = ? AND owner_id = ?",
                [*changes.values(), conversation_id, owner_id],
            )
            return load_conversation(conn, owner_id, conversation_id)

        updated: Conversation = await self._committer.write(update)
        return updated

    async def delete_conversation(self, owner_id: str, conversation_id: str) -> None:
        def delete(conn: sqlite3.Connection) -> None:
            cursor = conn.execute(
                "DELETE FROM conversations WHERE id = ? AND owner_id = ?",
                (conversation_id, owner_id),
            )
            if cursor.rowcount == 0:
                raise NotFound(f"conversation {conversation_id} not found")

        await self._committer.write(delete)

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

        def select(conn: sqlite3.Connection) -> list[Any]:
            require_conversation(conn, owner_id, conversation_id)
            where = ["conversation_id = ?"]
            params: list[Any] = [conversation_id]
            if after is not None:
                where.append("seq > ?")
                params.append(after)
            if before is not None:
                where.append("seq < ?")
                params.append(before)
            order = "DESC" if backwards else "ASC"
            params.append(limit + 1)
            return conn.execute(
                f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE {' AND '.join(where)} "
                f"ORDER BY seq {order} LIMIT ?",
                params,
            ).fetchall()

        rows = await self._read(select)
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
        def select(conn: sqlite3.Connection) -> list[Any]:
            require_conversation(conn, owner_id, conversation_id)
            return conn.execute(
                f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ? "
                "AND seq < ? ORDER BY seq DESC LIMIT ?",
                (conversation_id, before if before is not None else 2**62, limit),
            ).fetchall()

        rows = await self._read(select)
        return [message_from_row(row) for row in rows]

    async def find_send(
        self, owner_id: str, conversation_id: str, client_message_id: str
    ) -> ReplyStart | None:
        def find(conn: sqlite3.Connection) -> ReplyStart | None:
            conversation = load_conversation(conn, owner_id, conversation_id)
            return find_replay(conn, conversation, client_message_id)

        found: ReplyStart | None = await self._read(find)
        return found

    async def begin_reply(
        self,
        owner_id: str,
        conversation_id: str,
        *,
        content: str,
        client_message_id: str | None,
    ) -> ReplyStart:
        def begin(conn: sqlite3.Connection) -> ReplyStart:
            conversation = load_conversation(conn, owner_id, conversation_id)
            if client_message_id is not None:
                replay = find_replay(conn, conversation, client_message_id)
                if replay is not None:
                    return replay
            if conversation.open_reply_to is not None:
                raise ReplyInProgress(
                    f"conversation {conversation_id} is still generating a reply; "
                    "wait for it to finish (or resume its stream) before sending again"
                )
            now = time.time()
            message = Message(
                id=new_id("msg"),
                conversation_id=conversation_id,
                seq=conversation.message_count + 1,
                role="user",
                content=content,
                status="complete",
                created_at=now,
                client_message_id=client_message_id,
            )
            insert_message(conn, message)
            conn.execute(
                "UPDATE conversations SET message_count = message_count + 1, "
                "last_activity = ?, updated_at = ?, open_reply_to = ? WHERE id = ?",
                (now, now, message.id, conversation_id),
            )
            conversation.message_count += 1
            conversation.last_activity = conversation.updated_at = now
            conversation.open_reply_to = message.id
            return ReplyStart(conversation, message, replayed=False)

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
    ) -> Message:
        def finish(conn: sqlite3.Connection) -> Message:
            conversation = load_conversation(conn, owner_id, conversation_id)
            if conversation.open_reply_to != reply_to:
                raise StorageError(f"no reply to {reply_to} is open in {conversation_id}")
            return close_reply(conn, conversation, content, status, reason, usage)

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
        def recover(conn: sqlite3.Connection) -> int:
            rows = conn.execute(
                f"SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE open_reply_to IS NOT NULL"
            ).fetchall()
            for row in rows:
                close_reply(conn, conversation_from_row(row), "", "incomplete", reason, None)
            return len(rows)

        recovered: int = await self._committer.write(recover)
        return recovered

    async def integrity_check(self) -> str:
        rows = await self._read(lambda conn: conn.execute("PRAGMA integrity_check").fetchall())
        return "\n".join(str(row[0]) for row in rows)
