"""Conversations: create, list, read, rename or archive, delete, and read their history.

Every operation takes the owner and passes it to the store, which checks it in the query
itself. The limits on what a conversation may hold are enforced here, once, whichever
surface asked; so is the coherence of the working set and the reply hub with storage.
"""

from __future__ import annotations

from typing import Any

import orjson

from chatkeep.cache.working_set import WorkingSet
from chatkeep.domain.records import Conversation, ConversationStatus, Message, Page
from chatkeep.domain.validation import InvalidValue, check_json
from chatkeep.errors import InvalidRequest
from chatkeep.providers.registry import ProviderRegistry
from chatkeep.settings import LimitSettings
from chatkeep.storage.base import UNSET, Store
from chatkeep.streaming.hub import ReplyHub


class ConversationService:
    """The conversation operations, scoped by owner."""

    def __init__(
        self,
        *,
        store: Store,
        providers: ProviderRegistry,
        working_set: WorkingSet,
        hub: ReplyHub,
        limits: LimitSettings,
        default_model: str,
    ) -> None:
        self.store = store
        self.providers = providers
        self.working_set = working_set
        self.hub = hub
        self.limits = limits
        self.default_model = default_model

    async def create(
        self,
        owner_id: str,
        *,
        model: str | None = None,
        title: str | None = None,
        system_prompt: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Conversation:
        """A new, empty conversation; an unknown model is refused now, not at the first send."""
        model = model or self.default_model
        self.providers.route(model)
        self._check_text("title", title, self.limits.max_title_chars)
        self._check_text("system_prompt", system_prompt, self.limits.max_message_chars)
        self._check_metadata(metadata)
        return await self.store.create_conversation(
            owner_id, model=model, title=title, system_prompt=system_prompt, metadata=metadata
        )

    async def list(
        self,
        owner_id: str,
        *,
        status: ConversationStatus | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Page[Conversation]:
        """Newest first, a page at a time."""
        return await self.store.list_conversations(
            owner_id, status=status, limit=self.page_size(limit), cursor=cursor
        )

    async def get(self, owner_id: str, conversation_id: str) -> Conversation:
        return await self.store.get_conversation(owner_id, conversation_id)

    async def update(
        self,
        owner_id: str,
        conversation_id: str,
        *,
        title: str | None = UNSET,
        status: ConversationStatus = UNSET,
        metadata: dict[str, Any] = UNSET,
    ) -> Conversation:
        """Change the fields given (`UNSET` leaves one as it is)."""
        if title is not UNSET:
            self._check_text("title", title, self.limits.max_title_chars)
        if metadata is not UNSET:
            self._check_metadata(metadata)
        conversation = await self.store.update_conversation(
            owner_id, conversation_id, title=title, status=status, metadata=metadata
        )
        self.working_set.invalidate(conversation_id)
        return conversation

    async def delete(self, owner_id: str, conversation_id: str) -> None:
        """Delete a conversation and its messages; refused (409) while a reply is open."""
        await self.store.delete_conversation(owner_id, conversation_id)
        self.hub.discard(conversation_id)
        self.working_set.invalidate(conversation_id)

    async def history(
        self,
        owner_id: str,
        conversation_id: str,
        *,
        limit: int | None = None,
        after: int | None = None,
        before: int | None = None,
    ) -> Page[Message]:
        """Messages in order, a page at a time (see `Store.list_messages`)."""
        return await self.store.list_messages(
            owner_id, conversation_id, limit=self.page_size(limit), after=after, before=before
        )

    def page_size(self, limit: int | None) -> int:
        """The page size asked for, within the bound."""
        return min(limit or self.limits.default_page_size, self.limits.max_page_size)

    @staticmethod
    def _check_text(name: str, value: str | None, limit: int) -> None:
        if value is not None and len(value) > limit:
            raise InvalidRequest(f"{name} is {len(value)} characters; the limit is {limit}")

    def _check_metadata(self, metadata: dict[str, Any] | None) -> None:
        if metadata is None:
            return
        try:
            check_json(metadata, max_depth=self.limits.max_metadata_depth)
        except InvalidValue as exc:
            raise InvalidRequest(f"metadata: {exc}") from None
        if len(orjson.dumps(metadata)) > self.limits.max_metadata_bytes:
            raise InvalidRequest(
                f"metadata is over the limit of {self.limits.max_metadata_bytes} bytes as JSON"
            )
