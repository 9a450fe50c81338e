"""Reply bookkeeping: what a send and its reply do to a conversation, decided once.

A send commits the user message and opens a reply to it; the reply closes with the
assistant message. The rules — numbering, the one open reply, usage sums, what a
retried send may replay — live here as pure functions; every store backend loads the
conversation in its transaction, asks these functions, and persists what they return.

The protocol, for one conversation::

    (no reply open) ── begin: user message seq n+1 ──▶ (reply open to it)
          ▲                                                  │
          └──── finish / recover: assistant message seq n+2 ─┘

    begin while a reply is open     → ReplyInProgress
    finish a reply that is not open → StorageError (the reply was closed already)
    delete while a reply is open    → ReplyInProgress
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import replace

from chatkeep.domain.records import Conversation, Message, MessageStatus, Usage
from chatkeep.errors import IdempotencyKeyReused, ReplyInProgress, StorageError

#: A clock (seconds since the epoch) and an id generator (``prefix`` → unique id).
Clock = Callable[[], float]
NewId = Callable[[str], str]


def send_fingerprint(content: str) -> str:
    """What identifies a send's request, stored with its client message id.

    Only the content defines what is stored: ``stream`` and ``priority`` shape how the
    answer is delivered, and a retry may change them. Versioned, so a send that gains
    fields later does not compare equal to an old fingerprint by accident.
    """
    digest = hashlib.sha256(b"send/1\0")
    # surrogatepass: a lone surrogate is refused at the edge, but hashing must not crash.
    digest.update(content.encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def check_replay(
    client_message_id: str, stored_fingerprint: str | None, fingerprint: str | None
) -> None:
    """Refuse a retry whose request differs from the first send with the same key.

    A send stored before fingerprints existed (``stored_fingerprint is None``), or a
    caller that has none to compare, replays as before.
    """
    if stored_fingerprint is None or fingerprint is None or stored_fingerprint == fingerprint:
        return
    raise IdempotencyKeyReused(
        f"client_message_id {client_message_id!r} was already used for a different message; "
        "use a new id for a new message"
    )


def check_can_begin(conversation: Conversation) -> None:
    """A conversation takes a new send only when no reply is open in it."""
    if conversation.open_reply_to is not None:
        raise ReplyInProgress(
            f"conversation {conversation.id} is still generating a reply; "
            "wait for it to finish (or resume its stream) before sending again"
        )


def check_can_finish(conversation: Conversation, reply_to: str) -> None:
    """Only the open reply can be finished, and only once."""
    if conversation.open_reply_to != reply_to:
        raise StorageError(f"no reply to {reply_to} is open in {conversation.id}")


def check_can_delete(conversation: Conversation) -> None:
    """A conversation is not deleted under a reply being generated for it."""
    if conversation.open_reply_to is not None:
        raise ReplyInProgress(
            f"conversation {conversation.id} is generating a reply; "
            "cancel it or wait for it to finish before deleting the conversation"
        )


def user_message(
    conversation: Conversation,
    *,
    content: str,
    client_message_id: str | None,
    now: float,
    new_id: NewId,
) -> Message:
    """The user message a send stores: the next in the conversation."""
    return Message(
        id=new_id("msg"),
        conversation_id=conversation.id,
        seq=conversation.message_count + 1,
        role="user",
        content=content,
        status="complete",
        created_at=now,
        client_message_id=client_message_id,
    )


def after_send(conversation: Conversation, message: Message) -> Conversation:
    """The conversation once ``message`` is stored and a reply to it is open."""
    return replace(
        conversation,
        message_count=message.seq,
        last_activity=message.created_at,
        updated_at=message.created_at,
        open_reply_to=message.id,
    )


def assistant_message(
    conversation: Conversation,
    *,
    content: str,
    status: MessageStatus,
    reason: str | None,
    usage: Usage | None,
    now: float,
    new_id: NewId,
    reason_code: str | None = None,
) -> Message:
    """The assistant message that closes the reply open in ``conversation``."""
    return Message(
        id=new_id("msg"),
        conversation_id=conversation.id,
        seq=conversation.message_count + 1,
        role="assistant",
        content=content,
        status=status,
        created_at=now,
        reply_to=conversation.open_reply_to,
        reason=reason,
        reason_code=reason_code,
        usage=usage,
    )


def add_usage(total: Usage, reply: Usage | None) -> Usage:
    """``total`` plus one reply's usage (a reply without usage adds nothing)."""
    if reply is None:
        return Usage(total.prompt_tokens, total.completion_tokens)
    return Usage(
        total.prompt_tokens + reply.prompt_tokens,
        total.completion_tokens + reply.completion_tokens,
    )


def after_reply(conversation: Conversation, reply: Message) -> Conversation:
    """The conversation once ``reply`` closed its open reply (no need to read it back)."""
    return replace(
        conversation,
        message_count=reply.seq,
        last_activity=reply.created_at,
        updated_at=reply.created_at,
        open_reply_to=None,
        usage=add_usage(conversation.usage, reply.usage),
    )
