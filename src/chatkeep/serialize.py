"""Records as the HTTP API shows them (JSON-ready dicts and bytes)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from chatkeep.domain.records import Conversation, Message, Usage


def timestamp(seconds: float) -> str:
    """An RFC 3339 UTC timestamp with milliseconds."""
    return (
        datetime.fromtimestamp(seconds, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def usage_dict(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


def conversation_dict(conversation: Conversation) -> dict[str, Any]:
    """A conversation as the API shows it."""
    return {
        "id": conversation.id,
        "title": conversation.title,
        "model": conversation.model,
        "system_prompt": conversation.system_prompt,
        "metadata": conversation.metadata,
        "status": conversation.status,
        "created_at": timestamp(conversation.created_at),
        "updated_at": timestamp(conversation.updated_at),
        "last_activity": timestamp(conversation.last_activity),
        "message_count": conversation.message_count,
        "usage": usage_dict(conversation.usage),
        "generating": conversation.open_reply_to is not None,
    }


def message_dict(message: Message) -> dict[str, Any]:
    """A message as the API shows it."""
    body: dict[str, Any] = {
        "id": message.id,
        "conversation_id": message.conversation_id,
        "seq": message.seq,
        "role": message.role,
        "content": message.content,
        "status": message.status,
        "created_at": timestamp(message.created_at),
    }
    if message.client_message_id is not None:
        body["client_message_id"] = message.client_message_id
    if message.reply_to is not None:
        body["reply_to"] = message.reply_to
    if message.reason is not None:
        body["reason"] = message.reason
    if message.usage is not None:
        body["usage"] = usage_dict(message.usage)
    return body


def message_json(message: Message) -> bytes:
    """A message as JSON bytes, sized to fit: safe to keep for as long as needed."""
    return compact(orjson.dumps(message_dict(message)))


def compact(data: bytes) -> bytes:
    """A copy of ``data`` in a buffer of its own size.

    orjson hands back its output in a buffer of at least 4 KiB; kept for the life of a
    reply stream, a 200-byte event would cost twenty times its size.
    """
    return bytes(memoryview(data))
