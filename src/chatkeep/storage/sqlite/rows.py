"""Rows of the SQLite schema turned into records, and back."""

from __future__ import annotations

import sqlite3
from typing import Any

import orjson

from chatkeep.domain.records import Conversation, Message, Usage

CONVERSATION_COLUMNS = (
    "id, owner_id, title, model, system_prompt, metadata, status, created_at, updated_at, "
    "last_activity, message_count, prompt_tokens, completion_tokens, open_reply_to, "
    "summary, summary_through_seq"
)

MESSAGE_COLUMNS = (
    "id, conversation_id, seq, role, content, status, created_at, client_message_id, "
    "reply_to, reason, prompt_tokens, completion_tokens, reason_code"
)


def conversation_from_row(row: sqlite3.Row | tuple[Any, ...]) -> Conversation:
    """A `Conversation` from a row selected with `CONVERSATION_COLUMNS`."""
    return Conversation(
        id=row[0],
        owner_id=row[1],
        title=row[2],
        model=row[3],
        system_prompt=row[4],
        metadata=orjson.loads(row[5]),
        status=row[6],
        created_at=row[7],
        updated_at=row[8],
        last_activity=row[9],
        message_count=row[10],
        usage=Usage(row[11], row[12]),
        open_reply_to=row[13],
        summary=row[14],
        summary_through_seq=row[15],
    )


def message_from_row(row: sqlite3.Row | tuple[Any, ...]) -> Message:
    """A `Message` from a row selected with `MESSAGE_COLUMNS`."""
    usage = Usage(row[10], row[11]) if row[10] is not None else None
    return Message(
        id=row[0],
        conversation_id=row[1],
        seq=row[2],
        role=row[3],
        content=row[4],
        status=row[5],
        created_at=row[6],
        client_message_id=row[7],
        reply_to=row[8],
        reason=row[9],
        usage=usage,
        reason_code=row[12],
    )


def message_values(message: Message) -> tuple[Any, ...]:
    """The values to insert for `message`, in `MESSAGE_COLUMNS` order."""
    usage = message.usage
    return (
        message.id,
        message.conversation_id,
        message.seq,
        message.role,
        message.content,
        message.status,
        message.created_at,
        message.client_message_id,
        message.reply_to,
        message.reason,
        usage.prompt_tokens if usage else None,
        usage.completion_tokens if usage else None,
        message.reason_code,
    )
