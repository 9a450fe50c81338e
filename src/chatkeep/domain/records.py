"""The records chatkeep stores: conversations and messages."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

Role = Literal["system", "user", "assistant"]
MessageStatus = Literal["complete", "incomplete"]
ConversationStatus = Literal["active", "archived"]
T = TypeVar("T")


@dataclass(slots=True)
class Usage:
    """Token counts of one reply, or summed over a conversation."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(slots=True)
class Conversation:
    """A conversation as stored. ``owner_id`` scopes every access."""

    id: str
    owner_id: str
    title: str | None
    model: str
    system_prompt: str | None
    metadata: dict[str, Any]
    status: ConversationStatus
    created_at: float
    updated_at: float
    last_activity: float
    message_count: int = 0
    usage: Usage = field(default_factory=Usage)
    # The user message a reply is being generated for, while one is.
    open_reply_to: str | None = None
    summary: str | None = None
    summary_through_seq: int = 0


@dataclass(slots=True)
class Message:
    """One message. ``seq`` counts 1, 2, 3… within its conversation."""

    id: str
    conversation_id: str
    seq: int
    role: Role
    content: str
    status: MessageStatus
    created_at: float
    client_message_id: str | None = None
    reply_to: str | None = None
    reason: str | None = None
    #: The error code of an incomplete reply (``provider_timeout``, ``shutdown``…).
    reason_code: str | None = None
    usage: Usage | None = None
    # Derived values computed once, on first use, by `domain.tokens.content_tokens` and
    # `cache.sizing.message_size`: the send path reads them for every message in a context.
    cached_tokens: int = field(default=-1, compare=False, repr=False)
    cached_size: int = field(default=-1, compare=False, repr=False)


@dataclass(slots=True)
class Page(Generic[T]):
    """One page of a listing; ``next_cursor`` is ``None`` on the last page."""

    items: list[T]
    next_cursor: str | None
