"""An in-memory store: the same contract as SQLite, nothing on disk.

For tests and throwaway demos. It holds every conversation it is given, so it
is bounded only by what is put in it; production runs use SQLite.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from chatkeep.domain import replies
from chatkeep.domain.records import (
    Conversation,
    ConversationStatus,
    Message,
    MessageStatus,
    Page,
    Usage,
)
from chatkeep.errors import NotFound
from chatkeep.storage.base import (
    RECOVERED_REASON,
    UNSET,
    ReplyStart,
    Store,
    decode_cursor,
    encode_cursor,
    new_id,
)
from chatkeep.storage.memory_keys import MemoryKeys
from chatkeep.storage.memory_transfer import MemoryTransfer


@dataclass(slots=True)
class _Entry:
    conversation: Conversation
    messages: list[Message] = field(default_factory=list)
    by_client_id: dict[str, Message] = field(default_factory=dict)
    fingerprints: dict[str, str] = field(default_factory=dict)  # by client_message_id
    by_reply_to: dict[str, Message] = field(default_factory=dict)


class MemoryStore(MemoryKeys, MemoryTransfer, Store):
    """Conversations in dictionaries; records are copied in and out, never shared."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        new_id: Callable[[str], str] = new_id,
    ) -> None:
        self._entries: dict[str, _Entry] = {}
        self._clock = clock
        self._new_id = new_id

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def _entry(self, owner_id: str, conversation_id: str) -> _Entry:
        entry = self._entries.get(conversation_id)
        if entry is None or entry.conversation.owner_id != owner_id:
            raise NotFound(f"conversation {conversation_id} not found")
        return entry

    async def create_conversation(
        self,
        owner_id: str,
        *,
        model: str,
        title: str | None = None,
        system_prompt: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Conversation:
        now = self._clock()
        conversation = Conversation(
            id=self._new_id("conv"),
            owner_id=owner_id,
            title=title,
            model=model,
            system_prompt=system_prompt,
            metadata=copy.deepcopy(metadata or {}),
            status="active",
            created_at=now,
            updated_at=now,
            last_activity=now,
        )
        self._entries[conversation.id] = _Entry(conversation)
        return _copy(conversation)

    async def get_conversation(self, owner_id: str, conversation_id: str) -> Conversation:
        return _copy(self._entry(owner_id, conversation_id).conversation)

    async def list_conversations(
        self,
        owner_id: str,
        *,
        status: ConversationStatus | None,
        limit: int,
        cursor: str | None,
    ) -> Page[Conversation]:
        key_after = tuple(decode_cursor(cursor, float, str)) if cursor is not None else None
        matching = sorted(
            (
                e.conversation
                for e in self._entries.values()
                if e.conversation.owner_id == owner_id
                and (status is None or e.conversation.status == status)
                and (
                    key_after is None or (e.conversation.created_at, e.conversation.id) < key_after
                )
            ),
            key=lambda c: (c.created_at, c.id),
            reverse=True,
        )
        items = [_copy(c) for c in matching[:limit]]
        next_cursor = None
        if len(matching) > limit:
            next_cursor = encode_cursor(items[-1].created_at, items[-1].id)
        return Page(items, next_cursor)

    async def update_conversation(
        self,
        owner_id: str,
        conversation_id: str,
        *,
        title: str | None = UNSET,
        status: ConversationStatus = UNSET,
        metadata: dict[str, Any] = UNSET,
    ) -> Conversation:
        conversation = self._entry(owner_id, conversation_id).conversation
        if title is not UNSET:
            conversation.title = title
        if status is not UNSET:
            conversation.status = status
        if metadata is not UNSET:
            conversation.metadata = copy.deepcopy(metadata)
        conversation.updated_at = self._clock()
        return _copy(conversation)

    async def delete_conversation(self, owner_id: str, conversation_id: str) -> None:
        replies.check_can_delete(self._entry(owner_id, conversation_id).conversation)
        del self._entries[conversation_id]

    async def list_messages(
        self,
        owner_id: str,
        conversation_id: str,
        *,
        limit: int,
        after: int | None = None,
        before: int | None = None,
    ) -> Page[Message]:
        messages = self._entry(owner_id, conversation_id).messages
        # seq n lives at index n - 1, so bounds are slices, not scans.
        start = max(after or 0, 0)
        stop = len(messages) if before is None else min(max(before - 1, 0), len(messages))
        window = messages[start:stop] if start < stop else []
        if before is not None and after is None:
            items = window[-limit:]
            more = len(window) > limit
            next_cursor = str(items[0].seq) if more and items else None
        else:
            items = window[:limit]
            more = len(window) > limit
            next_cursor = str(items[-1].seq) if more and items else None
        return Page([replace(m) for m in items], next_cursor)

    async def recent_messages(
        self, owner_id: str, conversation_id: str, *, limit: int, before: int | None = None
    ) -> list[Message]:
        messages = self._entry(owner_id, conversation_id).messages
        stop = len(messages) if before is None else min(max(before - 1, 0), len(messages))
        return [replace(m) for m in reversed(messages[max(stop - limit, 0) : stop])]

    async def find_send(
        self,
        owner_id: str,
        conversation_id: str,
        client_message_id: str,
        fingerprint: str | None = None,
    ) -> ReplyStart | None:
        entry = self._entry(owner_id, conversation_id)
        first = entry.by_client_id.get(client_message_id)
        if first is None:
            return None
        replies.check_replay(
            client_message_id, entry.fingerprints.get(client_message_id), fingerprint
        )
        reply = entry.by_reply_to.get(first.id)
        return ReplyStart(
            _copy(entry.conversation),
            replace(first),
            replayed=True,
            assistant_message=replace(reply) if reply else None,
        )

    async def begin_reply(
        self,
        owner_id: str,
        conversation_id: str,
        *,
        content: str,
        client_message_id: str | None,
        fingerprint: str | None = None,
    ) -> ReplyStart:
        entry = self._entry(owner_id, conversation_id)
        if client_message_id is not None:
            replay = await self.find_send(owner_id, conversation_id, client_message_id, fingerprint)
            if replay is not None:
                return replay
        replies.check_can_begin(entry.conversation)
        message = replies.user_message(
            entry.conversation,
            content=content,
            client_message_id=client_message_id,
            now=self._clock(),
            new_id=self._new_id,
        )
        entry.messages.append(message)
        if client_message_id is not None:
            entry.by_client_id[client_message_id] = message
            if fingerprint is not None:
                entry.fingerprints[client_message_id] = fingerprint
        entry.conversation = replies.after_send(entry.conversation, message)
        return ReplyStart(_copy(entry.conversation), replace(message), replayed=False)

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
        entry = self._entry(owner_id, conversation_id)
        replies.check_can_finish(entry.conversation, reply_to)
        message = self._close_reply(entry, content, status, reason, usage, reason_code)
        return replace(message)

    async def set_summary(
        self, owner_id: str, conversation_id: str, *, summary: str, through_seq: int
    ) -> None:
        entry = self._entries.get(conversation_id)
        if entry is None or entry.conversation.owner_id != owner_id:
            return  # deleted meanwhile: a late summary has nothing to attach to
        if through_seq > entry.conversation.summary_through_seq:
            entry.conversation.summary = summary
            entry.conversation.summary_through_seq = through_seq

    async def recover_open_replies(self, reason: str = RECOVERED_REASON) -> int:
        open_entries = [e for e in self._entries.values() if e.conversation.open_reply_to]
        for entry in open_entries:
            self._close_reply(entry, "", "incomplete", reason, None)
        return len(open_entries)

    async def integrity_check(self) -> str:
        return "ok"

    def _close_reply(
        self,
        entry: _Entry,
        content: str,
        status: MessageStatus,
        reason: str | None,
        usage: Usage | None,
        reason_code: str | None = None,
    ) -> Message:
        conversation = entry.conversation
        assert conversation.open_reply_to is not None
        message = replies.assistant_message(
            conversation,
            content=content,
            status=status,
            reason=reason,
            usage=replace(usage) if usage is not None else None,
            now=self._clock(),
            new_id=self._new_id,
            reason_code=reason_code,
        )
        entry.messages.append(message)
        entry.by_reply_to[conversation.open_reply_to] = message
        entry.conversation = replies.after_reply(conversation, message)
        return message


def _copy(conversation: Conversation) -> Conversation:
    return replace(
        conversation,
        metadata=copy.deepcopy(conversation.metadata),
        usage=replace(conversation.usage),
    )
