"""Summaries of older turns, made in the background through a bounded job queue.

When a reply's context had to leave older messages out, the part of the conversation
that is neither in the context nor covered by the stored summary may be worth
summarising. A job (at most one queued per conversation) reads that part page by page,
and when it holds more than ``threshold_tokens`` asks the conversation's model for a
summary, which later contexts carry in place of those messages. When the queue is full
the summary is skipped and counted: a reply never waits for one. The stored history is
never changed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from chatkeep.domain.context import Context, message_tokens
from chatkeep.domain.records import Conversation, Message
from chatkeep.domain.tokens import cut_to_tokens
from chatkeep.providers.base import ChatRequest
from chatkeep.providers.registry import ProviderRegistry
from chatkeep.service.job_queue import BoundedJobQueue
from chatkeep.storage.base import Store

logger = logging.getLogger("chatkeep.service.summaries")

#: Share of the model's context budget one summary request may use for the old messages.
SUMMARY_INPUT_SHARE = 0.75
PAGE = 64

INSTRUCTION = (
    "Summarise the conversation below for your own later reference: keep names, facts, "
    "decisions, open questions and the user's preferences; leave out pleasantries. "
    "Write at most a few short paragraphs."
)


class Summarizer:
    """Decides when a conversation needs a summary, and makes it in the background."""

    def __init__(
        self,
        *,
        store: Store,
        providers: ProviderRegistry,
        queue: BoundedJobQueue,
        threshold_tokens: int,
        priority: int,
        max_tokens: int = 512,
        on_summary: Callable[[str], None] | None = None,
    ) -> None:
        self.store = store
        self.providers = providers
        self.queue = queue
        self.threshold_tokens = threshold_tokens
        self.priority = priority
        self.max_tokens = max_tokens
        self.on_summary = on_summary
        self.made = 0
        self.below_threshold = 0

    def consider(self, conversation: Conversation, context: Context) -> bool:
        """Queue a summary when the context left unsummarised messages out; never blocks."""
        if not context.truncated or context.oldest_seq - 1 <= conversation.summary_through_seq:
            return False
        owner_id, conversation_id, model = (
            conversation.owner_id,
            conversation.id,
            conversation.model,
        )
        upto = context.oldest_seq

        async def job() -> None:
            await self.summarize(owner_id, conversation_id, model, before_seq=upto)

        return self.queue.submit(job, priority=self.priority, key=conversation_id)

    async def summarize(
        self, owner_id: str, conversation_id: str, model: str, *, before_seq: int
    ) -> bool:
        """Summarise the unsummarised messages before ``before_seq``; True when stored."""
        conversation = await self.store.get_conversation(owner_id, conversation_id)
        route = self.providers.route(model)
        budget = int(route.context_tokens * SUMMARY_INPUT_SHARE)
        older, tokens = await self._older_messages(conversation, before_seq, budget)
        if tokens < self.threshold_tokens or not older:
            self.below_threshold += 1
            return False
        transcript = "\n".join(f"{m.role}: {m.content}" for m in older)
        previous = f"Summary so far: {conversation.summary}\n\n" if conversation.summary else ""
        request = ChatRequest(
            messages=[
                {"role": "system", "content": INSTRUCTION},
                {"role": "user", "content": f"{previous}Conversation:\n{transcript}"},
            ],
            options={"max_tokens": self.max_tokens},
        )
        completion = await route.provider.complete(request)
        # A model may ignore max_tokens; a summary that grew with every round would
        # outgrow the context it is meant to save, so it is cut here too.
        summary = cut_to_tokens(completion.text.strip(), self.max_tokens)
        if not summary:
            return False
        await self.store.set_summary(
            owner_id, conversation_id, summary=summary, through_seq=older[-1].seq
        )
        self.made += 1
        if self.on_summary is not None:
            self.on_summary(conversation_id)  # cached records now lack the summary
        return True

    async def _older_messages(
        self, conversation: Conversation, before_seq: int, budget: int
    ) -> tuple[list[Message], int]:
        """Oldest unsummarised complete messages first, until the budget is spent."""
        older: list[Message] = []
        tokens = 0
        after = conversation.summary_through_seq
        while True:
            page = await self.store.list_messages(
                conversation.owner_id, conversation.id, limit=PAGE, after=after, before=before_seq
            )
            for message in page.items:
                if message.status != "complete" or not message.content:
                    continue
                cost = message_tokens(message.content)
                if older and tokens + cost > budget:
                    return older, tokens
                older.append(message)
                tokens += cost
            if page.next_cursor is None:
                return older, tokens
            after = int(page.next_cursor)

    def stats(self) -> dict[str, object]:
        """Counts for ``/admin/stats``."""
        return {
            "made": self.made,
            "below_threshold": self.below_threshold,
            "queue": self.queue.stats(),
        }
