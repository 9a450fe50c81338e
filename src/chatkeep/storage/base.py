"""The `Store` interface: every read and write of conversations and messages.

Rules every backend keeps:

* Every call is scoped by ``owner_id``; a conversation of another owner answers
  `NotFound`, exactly as one that does not exist.
* A write returns only after it is durable (committed); callers acknowledge a
  message to a client only after the store call returned.
* ``(conversation_id, client_message_id)`` is unique: a retried send returns the
  first result instead of storing the message twice. The send's fingerprint
  (`chatkeep.domain.replies.send_fingerprint`) is stored with it: the same id with a
  different fingerprint is `IdempotencyKeyReused`, never a silent replay.
* A conversation has at most one reply open at a time (`begin_reply` …
  `finish_reply`); recovery at startup closes replies left open by a crash. What a
  send and a reply write is decided by `chatkeep.domain.replies`; backends persist it.
* A conversation with an open reply is not deleted (`ReplyInProgress`), checked in
  the transaction that would delete it.
* Backends take their clock and id generator as constructor arguments
  (``clock=time.time``, ``new_id=new_id``), so tests step time instead of sleeping.
* Listings are read page by page from storage; nothing loads a whole
  conversation into memory.
* Driver errors are translated to `chatkeep.errors.StorageError`.
"""

from __future__ import annotations

import abc
import base64
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from chatkeep.domain.records import (
    Conversation,
    ConversationStatus,
    Message,
    MessageStatus,
    Page,
    Usage,
)
from chatkeep.errors import InvalidRequest
from chatkeep.storage.key_store import KeyStore
from chatkeep.storage.transfer_store import TransferStore

#: Stored with a reply that a crash or restart left open.
RECOVERED_REASON = "the server stopped while this reply was being generated"


class _Unset:
    """Marks a field an update leaves alone (``None`` is a value)."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


def new_id(prefix: str) -> str:
    """A random, URL-safe identifier such as ``conv_3f9c…``."""
    return f"{prefix}_{os.urandom(12).hex()}"


def encode_cursor(*parts: Any) -> str:
    """An opaque pagination cursor."""
    return base64.urlsafe_b64encode(orjson.dumps(parts)).decode().rstrip("=")


def decode_cursor(cursor: str, *kinds: type) -> list[Any]:
    """Read a cursor made by `encode_cursor` from parts of ``kinds`` (``float``, ``str``).

    A malformed or forged one is the client's error: it reaches a query only when each part
    is of its kind, numbers finite and within 64 bits.
    """
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        parts = orjson.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, orjson.JSONDecodeError) as exc:
        raise InvalidRequest("cursor is not valid; pass next_cursor back unchanged") from exc
    if (
        not isinstance(parts, list)
        or len(parts) != len(kinds)
        or not all(_is_kind(part, kind) for part, kind in zip(parts, kinds, strict=True))
    ):
        raise InvalidRequest("cursor is not valid; pass next_cursor back unchanged")
    return parts


def _is_kind(value: Any, kind: type) -> bool:
    if kind is float:  # JSON has one kind of number: 2.0 may come back as 2
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        return math.isfinite(value) and -(2**63) <= value < 2**63
    return isinstance(value, kind)


@dataclass(slots=True)
class ReplyStart:
    """What `Store.begin_reply` did.

    When ``replayed`` is true the send was a retry of ``client_message_id``: nothing
    was written, ``user_message`` is the first one, and ``assistant_message`` its reply
    (``None`` while that reply is still open).
    """

    conversation: Conversation
    user_message: Message
    replayed: bool
    assistant_message: Message | None = None


class Store(KeyStore, TransferStore, abc.ABC):
    """Durable conversations and messages, scoped by owner."""

    #: Called with (seconds, writes) after each durable commit, when the backend can tell.
    commit_observer: Callable[[float, int], None] | None = None

    def stats(self) -> dict[str, Any]:
        """What ``/admin/stats`` shows about storage."""
        return {"backend": type(self).__name__}

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect, migrate the schema, and be ready for calls."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release everything. Safe to call twice."""

    @abc.abstractmethod
    async def create_conversation(
        self,
        owner_id: str,
        *,
        model: str,
        title: str | None = None,
        system_prompt: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Conversation:
        """Store a new, empty, active conversation."""

    @abc.abstractmethod
    async def get_conversation(self, owner_id: str, conversation_id: str) -> Conversation:
        """The conversation, or `NotFound`."""

    @abc.abstractmethod
    async def list_conversations(
        self,
        owner_id: str,
        *,
        status: ConversationStatus | None,
        limit: int,
        cursor: str | None,
    ) -> Page[Conversation]:
        """Newest first, ``limit`` at a time."""

    @abc.abstractmethod
    async def update_conversation(
        self,
        owner_id: str,
        conversation_id: str,
        *,
        title: str | None = UNSET,
        status: ConversationStatus = UNSET,
        metadata: dict[str, Any] = UNSET,
    ) -> Conversation:
        """Change the given fields; the others are left as they are."""

    @abc.abstractmethod
    async def delete_conversation(self, owner_id: str, conversation_id: str) -> None:
        """Delete the conversation and its messages, or `NotFound`.

        Raises `ReplyInProgress` while a reply is open in it, atomically with the delete.
        """

    @abc.abstractmethod
    async def list_messages(
        self,
        owner_id: str,
        conversation_id: str,
        *,
        limit: int,
        after: int | None = None,
        before: int | None = None,
    ) -> Page[Message]:
        """Messages in ``seq`` order.

        With ``after`` (or neither bound) the page holds the first ``limit`` messages
        past ``after`` and ``next_cursor`` is the ``after`` of the next page. With only
        ``before`` it holds the last ``limit`` messages before ``before`` and
        ``next_cursor`` is the ``before`` of the previous page.
        """

    @abc.abstractmethod
    async def recent_messages(
        self, owner_id: str, conversation_id: str, *, limit: int, before: int | None = None
    ) -> list[Message]:
        """Up to ``limit`` messages with ``seq < before``, newest first (for context)."""

    @abc.abstractmethod
    async def find_send(
        self,
        owner_id: str,
        conversation_id: str,
        client_message_id: str,
        fingerprint: str | None = None,
    ) -> ReplyStart | None:
        """The first send with ``client_message_id`` (``replayed=True``), or ``None``.

        Raises `IdempotencyKeyReused` when that send was stored with a fingerprint other
        than ``fingerprint`` (``None`` on either side skips the comparison).
        """

    @abc.abstractmethod
    async def begin_reply(
        self,
        owner_id: str,
        conversation_id: str,
        *,
        content: str,
        client_message_id: str | None,
        fingerprint: str | None = None,
    ) -> ReplyStart:
        """Commit a user message and open a reply to it, in one transaction.

        Raises `ReplyInProgress` when another reply is open in the conversation and
        ``client_message_id`` is new; a retried ``client_message_id`` is answered with
        ``replayed=True`` and writes nothing, or raises `IdempotencyKeyReused` when its
        ``fingerprint`` differs from the stored one (see `find_send`).
        """

    @abc.abstractmethod
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
        """Commit the assistant message that closes the open reply to ``reply_to``.

        An incomplete reply keeps its ``reason`` and the error code of its cause
        (``reason_code``), so a replay reports what the live answer did.
        """

    @abc.abstractmethod
    async def set_summary(
        self, owner_id: str, conversation_id: str, *, summary: str, through_seq: int
    ) -> None:
        """Store a summary of the messages up to ``through_seq``.

        A summary never moves backwards: one covering fewer messages than the stored
        one is ignored. The messages themselves are never touched.
        """

    @abc.abstractmethod
    async def recover_open_replies(self, reason: str = RECOVERED_REASON) -> int:
        """Close every reply left open (by a crash) as ``incomplete``; return how many."""

    @abc.abstractmethod
    async def integrity_check(self) -> str:
        """``"ok"`` when the stored data is sound, else what is wrong."""
