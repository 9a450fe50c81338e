"""The statements of the SQLite store that run inside a transaction, on a connection's thread.

Each takes the `sqlite3.Connection` it runs on; `SQLiteStore` decides which connection
(the writer, inside a group commit, or a reader) and when.
"""

from __future__ import annotations

import sqlite3
import time

from chatkeep.domain.records import Conversation, Message, MessageStatus, Usage
from chatkeep.errors import NotFound
from chatkeep.storage.base import ReplyStart, new_id
from chatkeep.storage.sqlite_rows import (
    CONVERSATION_COLUMNS,
    MESSAGE_COLUMNS,
    conversation_from_row,
    message_from_row,
    message_values,
)

PLACEHOLDERS = ", ".join("?" * len(MESSAGE_COLUMNS.split(",")))


def insert_message(conn: sqlite3.Connection, message: Message) -> None:
    conn.execute(
        f"INSERT INTO messages ({MESSAGE_COLUMNS}) VALUES ({PLACEHOLDERS})",
        message_values(message),
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
    conn: sqlite3.Connection, conversation: Conversation, client_message_id: str
) -> ReplyStart | None:
    row = conn.execute(
        f"SELECT {MESSAGE_COLUMNS} FROM messages "
        "WHERE conversation_id = ? AND client_message_id = ?",
        (conversation.id, client_message_id),
    ).fetchone()
    if row is None:
        return None
    user_message = message_from_row(row)
    reply = conn.execute(
        f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ? AND reply_to = ?",
        (conversation.id, user_message.id),
    ).fetchone()
    assistant = message_from_row(reply) if reply is not None else None
    return ReplyStart(conversation, user_message, replayed=True, assistant_message=assistant)


def close_reply(
    conn: sqlite3.Connection,
    conversation: Conversation,
    content: str,
    status: MessageStatus,
    reason: str | None,
    usage: Usage | None,
) -> Message:
    now = time.time()
    message = Message(
        id=new_id("msg"),
        conversation_id=conversation.id,
        seq=conversation.message_count + 1,
        role="assistant",
        content=content,
        status=status,
        created_at=now,
        reply_to=conversation.open_reply_to,
        reason=reason,
        usage=usage,
    )
    insert_message(conn, message)
    conn.execute(
        "UPDATE conversations SET message_count = message_count + 1, last_activity = ?, "
        "updated_at = ?, open_reply_to = NULL, prompt_tokens = prompt_tokens + ?, "
        "completion_tokens = completion_tokens + ? WHERE id = ?",
        (
            now,
            now,
            usage.prompt_tokens if usage else 0,
            usage.completion_tokens if usage else 0,
            conversation.id,
        ),
    )
    return message
