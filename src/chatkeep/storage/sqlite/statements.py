"""The statements of the SQLite store that run inside a transaction, on a connection's thread.

Each takes the `sqlite3.Connection` it runs on; `SQLiteStore` decides which connection
(the writer, inside a group commit, or a reader) and when. What to write is decided by
`chatkeep.domain.replies`; these functions only persist it.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import orjson

from chatkeep.domain import replies
from chatkeep.domain.records import Conversation, Message
from chatkeep.errors import NotFound
from chatkeep.storage.base import ReplyStart
from chatkeep.storage.sqlite.rows import (
    CONVERSATION_COLUMNS,
    MESSAGE_COLUMNS,
    conversation_from_row,
    message_from_row,
    message_values,
)

PLACEHOLDERS = ", ".join("?" * len(MESSAGE_COLUMNS.split(",")))


def insert_message(
    conn: sqlite3.Connection, message: Message, fingerprint: str | None = None
) -> None:
    conn.execute(
        f"INSERT INTO messages ({MESSAGE_COLUMNS}, fingerprint) VALUES ({PLACEHOLDERS}, ?)",
        (*message_values(message), fingerprint),
    )


def save_conversation_counters(conn: sqlite3.Connection, conversation: Conversation) -> None:
    """Persist what a send or a reply changed: counts, times, the open reply, usage."""
    conn.execute(
        "UPDATE conversations SET message_count = ?, last_activity = ?, updated_at = ?, "
        "open_reply_to = ?, prompt_tokens = ?, completion_tokens = ? WHERE id = ?",
        (
            conversation.message_count,
            conversation.last_activity,
            conversation.updated_at,
            conversation.open_reply_to,
            conversation.usage.prompt_tokens,
            conversation.usage.completion_tokens,
            conversation.id,
        ),
    )


def load_conversation(
    conn: sqlite3.Connection, owner_id: str, conversation_id: str
) -> Conversation:
    row = conn.execute(
        f"SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE id = ? AND owner_id = ?",
        (conversation_id, owner_id),
    ).fetchone()
    if row is None:
        raise NotFound(f"conversation {conversation_id} not found")
    return conversation_from_row(row)


def require_conversation(conn: sqlite3.Connection, owner_id: str, conversation_id: str) -> None:
    row = conn.execute(
        "SELECT 1 FROM conversations WHERE id = ? AND owner_id = ?", (conversation_id, owner_id)
    ).fetchone()
    if row is None:
        raise NotFound(f"conversation {conversation_id} not found")


def find_replay(
    conn: sqlite3.Connection,
    conversation: Conversation,
    client_message_id: str,
    fingerprint: str | None,
) -> ReplyStart | None:
    """The first send with ``client_message_id``, if its request matches ``fingerprint``."""
    row = conn.execute(
        f"SELECT {MESSAGE_COLUMNS}, fingerprint FROM messages "
        "WHERE conversation_id = ? AND client_message_id = ?",
        (conversation.id, client_message_id),
    ).fetchone()
    if row is None:
        return None
    replies.check_replay(client_message_id, row[-1], fingerprint)
    user_message = message_from_row(row[:-1])
    reply = conn.execute(
        f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ? AND reply_to = ?",
        (conversation.id, user_message.id),
    ).fetchone()
    assistant = message_from_row(reply) if reply is not None else None
    return ReplyStart(conversation, user_message, replayed=True, assistant_message=assistant)


def close_reply(conn: sqlite3.Connection, conversation: Conversation, message: Message) -> None:
    """Store the assistant message ``message`` that closes the reply open in ``conversation``."""
    insert_message(conn, message)
    save_conversation_counters(conn, replies.after_reply(conversation, message))


def update_conversation_row(
    conn: sqlite3.Connection, owner_id: str, conversation_id: str, changes: dict[str, Any]
) -> Conversation:
    """Set ``changes`` (column → value) on the conversation; return it as it is now."""
    load_conversation(conn, owner_id, conversation_id)
    assignments = ", ".join(f"{column} = ?" for column in changes)
    conn.execute(
        f"UPDATE conversations SET {assignments} WHERE id = ? AND owner_id = ?",
        [*changes.values(), conversation_id, owner_id],
    )
    return load_conversation(conn, owner_id, conversation_id)


def delete_conversation_row(conn: sqlite3.Connection, owner_id: str, conversation_id: str) -> None:
    """Delete the conversation and (by cascade) its messages; refused while a reply is open.

    Checked in the transaction that deletes: a reply cannot open in between.
    """
    replies.check_can_delete(load_conversation(conn, owner_id, conversation_id))
    cursor = conn.execute(
        "DELETE FROM conversations WHERE id = ? AND owner_id = ?", (conversation_id, owner_id)
    )
    if cursor.rowcount == 0:
        raise NotFound(f"conversation {conversation_id} not found")


def open_replies(conn: sqlite3.Connection) -> list[Conversation]:
    """Every conversation with a reply open (after a crash: the ones recovery closes)."""
    rows = conn.execute(
        f"SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE open_reply_to IS NOT NULL"
    ).fetchall()
    return [conversation_from_row(row) for row in rows]


def insert_conversation(conn: sqlite3.Connection, conversation: Conversation) -> None:
    """Store a new, empty conversation."""
    conn.execute(
        "INSERT INTO conversations (id, owner_id, title, model, system_prompt, "
        "metadata, status, created_at, updated_at, last_activity) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            conversation.id,
            conversation.owner_id,
            conversation.title,
            conversation.model,
            conversation.system_prompt,
            orjson.dumps(conversation.metadata).decode(),
            conversation.status,
            conversation.created_at,
            conversation.updated_at,
            conversation.last_activity,
        ),
    )
