"""Token estimates without a tokenizer.

The default estimator counts roughly one token per four characters of English
text, with a floor of one token per word-like run; it is fast and errs high for
code and non-Latin scripts only a little. A real tokenizer can be plugged in by
anything that implements `TokenEstimator`.
"""

from __future__ import annotations

from typing import Protocol

from chatkeep.domain.records import Message

#: Tokens every message costs beyond its text (role markers, separators).
MESSAGE_OVERHEAD_TOKENS = 4


class TokenEstimator(Protocol):
    """Counts the tokens of a text."""

    def __call__(self, text: str) -> int: ...


def estimate_tokens(text: str) -> int:
    """A fast heuristic: max(characters / 4, words), at least 1 for non-empty text."""
    if not text:
        return 0
    by_chars = (len(text) + 3) // 4
    by_words = text.count(" ") + 1
    return max(by_chars, by_words)


def content_tokens(message: Message, estimator: TokenEstimator = estimate_tokens) -> int:
    """Tokens of a message's content; the default estimator's count is cached on the record."""
    if estimator is not estimate_tokens:
        return estimator(message.content)
    if message.cached_tokens < 0:
        message.cached_tokens = estimate_tokens(message.content)
    return message.cached_tokens


def cut_to_tokens(text: str, max_tokens: int, estimator: TokenEstimator = estimate_tokens) -> str:
    """``text`` cut at a word boundary so that it counts at most ``max_tokens``."""
    if estimator(text) <= max_tokens:
        return text
    # The heuristic counts about four characters a token: start there, shrink until it fits.
    cut = text[: max_tokens * 4]
    while cut and estimator(cut) > max_tokens:
        cut = cut[: int(len(cut) * 0.9)]
    space = cut.rfind(" ")
    return (cut[:space] if space > len(cut) // 2 else cut).rstrip() + " …"
