"""The part of the `Store` contract that moves whole conversations in and out.

Export reads a conversation and its messages page by page (the ordinary reads); import
writes one whole conversation in one transaction; the retention policy archives and
deletes idle conversations in bounded batches. Every call is scoped by owner, except the
retention batches, which act for the server on every owner's conversations.

Rules every backend keeps:

* `import_conversation` writes the conversation and all its messages in one transaction,
  or nothing. An id the owner already has is left alone (``False``: skipped, so importing
  a file twice stores nothing twice). A conversation id held by *another* owner, or a
  message id held by any other conversation, raises `IdNotAvailable` — the same neutral
  answer whoever holds it, so an import neither overwrites nor names another owner's data.
* The records given are consistent (``seq`` 1…n, ``message_count`` n, each message's
  ``conversation_id`` the conversation's): `chatkeep.transfer.format` checks that before
  a store sees them. The conversation is stored under ``owner_id`` with no reply open.
* A send's fingerprint is not part of the records: it is derived from the content
  (`import_fingerprint`), exactly as the send stored it, so a retried send of an imported
  message still replays and a reused id is still refused.
* `archive_idle` and `delete_idle` take at most ``limit`` conversations whose
  ``last_activity`` is before ``before`` and never one with a reply open (checked in the
  transaction that changes them); they return the ids they changed, so the caller can
  forget them in its caches. Which idle conversations a batch takes first is unspecified.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

from chatkeep.domain.records import Conversation, Message
from chatkeep.domain.replies import send_fingerprint
from chatkeep.errors import IdNotAvailable

__all__ = ["IdNotAvailable", "TransferStore", "import_fingerprint"]


def import_fingerprint(message: Message) -> str | None:
    """The fingerprint a send of ``message`` stored with its ``client_message_id``."""
    if message.client_message_id is None:
        return None
    return send_fingerprint(message.content)


class TransferStore(abc.ABC):
    """Whole-conversation writes: import and retention."""

    @abc.abstractmethod
    async def import_conversation(
        self, owner_id: str, conversation: Conversation, messages: Sequence[Message]
    ) -> bool:
        """Store ``conversation`` and ``messages`` for ``owner_id`` in one transaction.

        ``True`` when stored; ``False`` when the owner already has a conversation with this
        id (nothing is written). Raises `IdNotAvailable` when the conversation id belongs to
        another owner or a message id to another conversation (nothing is written).
        """

    @abc.abstractmethod
    async def archive_idle(self, before: float, limit: int) -> list[str]:
        """Archive up to ``limit`` active conversations idle since before ``before``.

        ``before`` is a time in seconds since the epoch, compared with ``last_activity``;
        conversations with a reply open are left alone. Returns the ids archived.
        """

    @abc.abstractmethod
    async def delete_idle(self, before: float, limit: int) -> list[str]:
        """Delete up to ``limit`` conversations (any status) idle since before ``before``.

        Their messages go with them; conversations with a reply open are left alone.
        Returns the ids deleted.
        """
