"""The context of a reply, read as little as its token budget needs.

Recent messages come from the working set; older ones are read from storage newest
first, a page at a time, only while the model's budget is not spent and messages remain
that the stored summary does not cover. `chatkeep.domain.context` then decides what fits.
"""

from __future__ import annotations

from chatkeep.cache.working_set import WorkingSet
from chatkeep.domain.context import Context, build_context
from chatkeep.domain.records import Conversation, Message
from chatkeep.domain.tokens import content_tokens
from chatkeep.providers.registry import ModelRoute
from chatkeep.storage.base import Store

#: How many stored messages one read fetches at a time.
CONTEXT_PAGE = 64


async def read_context(
    store: Store,
    working_set: WorkingSet,
    route: ModelRoute,
    conversation: Conversation,
    user_message: Message,
) -> Context:
    """The bounded context of the reply to ``user_message``, for ``route``'s model."""
    budget = route.context_tokens
    entry = await working_set.get(conversation.owner_id, conversation.id)
    newest_first = [m for m in reversed(entry.messages) if m.seq <= user_message.seq]
    if not newest_first or newest_first[0].seq != user_message.seq:
        newest_first = [user_message]  # the entry lagged; the store has the truth
    tokens = _tokens_in(newest_first)
    oldest = newest_first[-1].seq
    # Page further back only while the budget is not spent and older messages exist.
    while tokens <= budget and oldest > conversation.summary_through_seq + 1:
        page = await store.recent_messages(
            conversation.owner_id, conversation.id, limit=CONTEXT_PAGE, before=oldest
        )
        if not page:
            break
        newest_first.extend(page)
        tokens += _tokens_in(page)
        oldest = page[-1].seq
    return build_context(
        system_prompt=conversation.system_prompt,
        summary=conversation.summary,
        summary_through_seq=conversation.summary_through_seq,
        newest_first=newest_first,
        budget_tokens=budget,
        estimator=route.estimator,
    )


def _tokens_in(messages: list[Message]) -> int:
    return sum(content_tokens(m) for m in messages)
