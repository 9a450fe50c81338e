"""Import and retention batches in memory (the `TransferStore` part of `MemoryStore`).

The same contract as SQLite (`chatkeep.storage.transfer_store`). Checks come before any
change, so a refused import leaves nothing, as a rolled-back transaction would. Finding a
message id in another conversation walks every stored message: fine for the tests and
demos this store serves, and the price of keeping `MemoryStore` free of an index it
would need for nothing else.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from chatkeep.domain.records import Conversation, ConversationStatus, Message
from chatkeep.storage.transfer_store import IdNotAvailable, import_fingerprint

if TYPE_CHECKING:
    from collections.abc import Callable

    from chatkeep.storage.memory import _Entry


class MemoryTransfer:
    """Mixed into `MemoryStore`: whole-conversation writes."""

    # Set by `MemoryStore.__init__`.
    _entries: dict[str, _Entry]
    _clock: Callable[[], float]

    async def import_conversation(
        self, owner_id: str, conversation: Conversation, messages: Sequence[Message]
    ) -> bool:
        # Imported here: `chatkeep.storage.memory` imports this module to build its class.
        from chatkeep.storage.memory import _Entry

        existing = self._entries.get(conversation.id)
        if existing is not None:
            if existing.conversation.owner_id == owner_id:
                return False
            raise IdNotAvailable(f"conversation id {conversation.id} is not available")
        wanted = {message.id for message in messages}
        if any(m.id in wanted for e in self._entries.values() for m in e.messages):
            raise IdNotAvailable(f"a message id of conversation {conversation.id} is not available")
        entry = _Entry(
            replace(
                conversation,
                owner_id=owner_id,
                metadata=copy.deepcopy(conversation.metadata),
                usage=replace(conversation.usage),
                open_reply_to=None,
            )
        )
        for given in messages:
            message = replace(
                given,
                conversation_id=conversation.id,
                usage=replace(given.usage) if given.usage is not None else None,
            )
            entry.messages.append(message)
            if message.client_message_id is not None:
                entry.by_client_id[message.client_message_id] = message
                fingerprint = import_fingerprint(message)
                if fingerprint is not None:
                    entry.fingerprints[message.client_message_id] = fingerprint
            if message.reply_to is not None:
                entry.by_reply_to[message.reply_to] = message
        self._entries[conversation.id] = entry
        return True

    async def archive_idle(self, before: float, limit: int) -> list[str]:
        now = self._clock()
        ids = self._idle(before, limit, statuses=("active",))
        for conversation_id in ids:
            conversation = self._entries[conversation_id].conversation
            conversation.status = "archived"
            conversation.updated_at = now
        return ids

    async def delete_idle(self, before: float, limit: int) -> list[str]:
        ids = self._idle(before, limit, statuses=("active", "archived"))
        for conversation_id in ids:
            del self._entries[conversation_id]
        return ids

    def _idle(
        self, before: float, limit: int, *, statuses: tuple[ConversationStatus, ...]
    ) -> list[str]:
        """Up to ``limit`` ids in ``statuses`` idle since before ``before``, oldest first."""
        idle = sorted(
            (
                e.conversation
                for e in self._entries.values()
                if e.conversation.status in statuses
                and e.conversation.last_activity < before
                and e.conversation.open_reply_to is None
            ),
            key=lambda c: c.last_activity,
        )
        return [conversation.id for conversation in idle[:limit]]
