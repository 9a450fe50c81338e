"""Which messages are sent to the model: the context window policy.

The context is the system prompt, then (when there is one) the summary of older
turns, then as many of the most recent messages as fit the token budget, taken
newest first and never split. The newest message is always included, even when
it alone is over the budget: leaving out the question would be worse than
asking the model to cope. The stored history is never touched.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from chatkeep.domain.records import Message
from chatkeep.domain.tokens import (
    MESSAGE_OVERHEAD_TOKENS,
    TokenEstimator,
    content_tokens,
    cut_to_tokens,
    estimate_tokens,
)


@dataclass(slots=True)
class Context:
    """The messages for the model, oldest first, and what they cost."""

    messages: list[dict[str, str]]
    tokens: int
    #: Stored messages included (not counting the system prompt and summary).
    included: int
    #: True when older messages were left out for lack of budget.
    truncated: bool
    #: ``seq`` of the oldest stored message included (0 when none was).
    oldest_seq: int = 0


def message_tokens(content: str, estimator: TokenEstimator = estimate_tokens) -> int:
    """What one message costs in the context, overhead included."""
    return estimator(content) + MESSAGE_OVERHEAD_TOKENS


def build_context(
    *,
    system_prompt: str | None,
    summary: str | None,
    newest_first: Iterable[Message],
    budget_tokens: int,
    summary_through_seq: int = 0,
    estimator: TokenEstimator = estimate_tokens,
) -> Context:
    """Assemble the context for a reply from messages given newest first.

    ``newest_first`` may be a lazy iterable: it is consumed only until the budget
    is spent, so callers can page it in from storage. Messages with
    ``seq <= summary_through_seq`` are stood for by the summary and not repeated.
    """
    head: list[dict[str, str]] = []
    used = 0
    if system_prompt:
        head.append({"role": "system", "content": system_prompt})
        used += message_tokens(system_prompt, estimator)
    if summary:
        # A summary never takes more than a quarter of the budget, whatever was stored.
        summary = cut_to_tokens(summary, max(budget_tokens // 4, 1), estimator)
        text = f"Summary of the earlier conversation: {summary}"
        head.append({"role": "system", "content": text})
        used += message_tokens(text, estimator)

    recent: list[dict[str, str]] = []
    truncated = False
    oldest_seq = 0
    for message in newest_first:
        if message.seq <= summary_through_seq:
            break
        # An interrupted reply is kept in history but is not something the model said.
        if message.status != "complete" or not message.content:
            continue
        cost = content_tokens(message, estimator) + MESSAGE_OVERHEAD_TOKENS
        if recent and used + cost > budget_tokens:
            truncated = True
            break
        recent.append({"role": message.role, "content": message.content})
        used += cost
        oldest_seq = message.seq
    recent.reverse()
    return Context(head + recent, used, len(recent), truncated, oldest_seq)
