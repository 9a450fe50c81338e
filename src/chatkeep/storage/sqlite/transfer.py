"""Import and retention batches in SQLite (the `TransferStore` part of the store).

Each call is one write through the group commit, so it is one transaction (a savepoint
of the shared one): an import that fails halfway leaves nothing, and a batch is durable
before the caller hears of it. The retention batches walk the index on
``(status, last_activity)`` (migration 4), so a batch costs its ``limit``, not the table.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from chatkeep.domain.records import Conversation, Message
from chatkeep.storage.sqlite.group_commit import GroupCommitter
from chatkeep.storage.sqlite.rows import message_values
from chatkeep.storage.sqlite.statements import PLACEHOLDERS
from chatkeep.storage.transfer_store import IdNotAvailable, import_fingerprint

# Every column an import sets; ``open_reply_to`` stays NULL (nothing is generating).
_IMPORTED_COLUMNS = (
    "id, owner_id, title, model, system_prompt, metadata, status, created_at, updated_at, "
    "last_activity, message_count, prompt_tokens, completion_tokens, summary, "
    "summary_through_seq"
)
_IMPORTED_PLACEHOLDERS = ", ".join("?" * len(_IMPORTED_COLUMNS.split(",")))
_MESSAGE_INSERT = (
    "INSERT INTO messages (id, conversation_id, seq, role, content, status, created_at, "
    "client_message_id, reply_to, reason, prompt_tokens, completion_tokens, reason_code, "
    f"fingerprint) VALUES ({PLACEHOLDERS}, ?)"
)
#: Message rows handed to one ``executemany``: bounds the tuples alive at once.
_INSERT_CHUNK = 1000


class SQLiteTransfer:
    """Mixed into `SQLiteStore`: whole-conversation writes."""

    # Set by `SQLiteStore.__init__`.
    _committer: GroupCommitter
    _clock: Callable[[], float]

    async def import_conversation(
        self, owner_id: str, conversation: Conversation, messages: Sequence[Message]
    ) -> bool:
        def write(conn: sqlite3.Connection) -> bool:
            row = conn.execute(
                "SELECT owner_id FROM conversations WHERE id = ?", (conversation.id,)
            ).fetchone()
            if row is not None:
                if row[0] == owner_id:
                    return False
                raise IdNotAvailable(f"conversation id {conversation.id} is not available")
            conn.execute(
                f"INSERT INTO conversations ({_IMPORTED_COLUMNS}) "
                f"VALUES ({_IMPORTED_PLACEHOLDERS})",
                _conversation_values(owner_id, conversation),
            )
            for start in range(0, len(messages), _INSERT_CHUNK):
                chunk = messages[start : start + _INSERT_CHUNK]
                try:
                    conn.executemany(
                        _MESSAGE_INSERT,
                        [_message_row(conversation.id, m) for m in chunk],
                    )
                except sqlite3.IntegrityError:
                    # The records are checked for duplicates within the conversation before
                    # they get here, so a clash is an id another conversation holds.
                    raise IdNotAvailable(
                        f"a message id of conversation {conversation.id} is not available"
                    ) from None
            return True

        created: bool = await self._committer.write(write)
        return created

    async def archive_idle(self, before: float, limit: int) -> list[str]:
        def archive(conn: sqlite3.Connection) -> list[str]:
            ids = _idle(conn, "active", before, limit)
            if ids:
                conn.execute(
                    "UPDATE conversations SET status = 'archived', updated_at = ? "
                    f"WHERE id IN ({_marks(ids)}) AND open_reply_to IS NULL",
                    [self._clock(), *ids],
                )
            return ids

        archived: list[str] = await self._committer.write(archive)
        return archived

    async def delete_idle(self, before: float, limit: int) -> list[str]:
        def delete(conn: sqlite3.Connection) -> list[str]:
            # One index range per status: a status IN (…) with the same LIMIT would need
            # the whole range sorted first.
            ids = _idle(conn, "archived", before, limit)
            if len(ids) < limit:
                ids += _idle(conn, "active", before, limit - len(ids))
            if ids:
                conn.execute(
                    f"DELETE FROM conversations WHERE id IN ({_marks(ids)}) "
                    "AND open_reply_to IS NULL",
                    ids,
                )
            return ids

        deleted: list[str] = await self._committer.write(delete)
        return deleted


def _idle(conn: sqlite3.Connection, status: str, before: float, limit: int) -> list[str]:
    """Up to ``limit`` ids of ``status`` idle since before ``before``, oldest first."""
    rows = conn.execute(
        "SELECT id FROM conversations WHERE status = ? AND last_activity < ? "
        "AND open_reply_to IS NULL ORDER BY last_activity LIMIT ?",
        (status, before, limit),
    ).fetchall()
    return [row[0] for row in rows]


def _message_row(conversation_id: str, message: Message) -> tuple[Any, ...]:
    """The insert values of ``message``, in the conversation being imported whatever it says."""
    values = message_values(message)
    return (values[0], conversation_id, *values[2:], import_fingerprint(message))


def _marks(ids: Sequence[str]) -> str:
    # A batch is at most `RetentionSettings.batch_size` (10 000) ids, within SQLite's
    # 32 766 bound parameters.
    return ", ".join("?" * len(ids))


def _conversation_values(owner_id: str, conversation: Conversation) -> tuple[Any, ...]:
    """The values of `_IMPORTED_COLUMNS` for ``conversation``, stored for ``owner_id``."""
    return (
        conversation.id,
        owner_id,
        conversation.title,
        conversation.model,
        conversation.system_prompt,
        orjson.dumps(conversation.metadata).decode(),
        conversation.status,
        conversation.created_at,
        conversation.updated_at,
        conversation.last_activity,
        conversation.message_count,
        conversation.usage.prompt_tokens,
        conversation.usage.completion_tokens,
        conversation.summary,
        conversation.summary_through_seq,
    )
