"""The context window: system prompt + summary + as many recent turns as fit."""

from __future__ import annotations

from chatkeep.domain.context import build_context, message_tokens
from chatkeep.domain.records import Message
from chatkeep.domain.tokens import MESSAGE_OVERHEAD_TOKENS, estimate_tokens


def _messages(*contents: str) -> list[Message]:
    """Messages numbered 1…n, alternating user/assistant, returned newest first."""
    built = [
        Message(f"m{n}", "c", n, "user" if n % 2 else "assistant", text, "complete", 0.0)
        for n, text in enumerate(contents, start=1)
    ]
    return list(reversed(built))


def test_everything_fits_in_order() -> None:
    context = build_context(
        system_prompt="sys", summary=None, newest_first=_messages("a", "b", "c"), budget_tokens=1000
    )
    assert [m["content"] for m in context.messages] == ["sys", "a", "b", "c"]
    assert not context.truncated and context.included == 3 and context.oldest_seq == 1


def test_budget_edge_exactly_fits_then_one_token_short() -> None:
    newest = _messages("aaaa", "bbbb", "cccc")  # one token each, plus overhead
    per = 1 + MESSAGE_OVERHEAD_TOKENS
    exact = build_context(
        system_prompt=None, summary=None, newest_first=newest, budget_tokens=3 * per
    )
    assert exact.included == 3 and not exact.truncated and exact.tokens == 3 * per
    short = build_context(
        system_prompt=None, summary=None, newest_first=newest, budget_tokens=3 * per - 1
    )
    assert [m["content"] for m in short.messages] == ["bbbb", "cccc"]
    assert short.truncated and short.oldest_seq == 2


def test_messages_are_never_split_and_newest_always_included() -> None:
    huge = "x" * 4000
    context = build_context(
        system_prompt=None, summary=None, newest_first=_messages("a", huge), budget_tokens=10
    )
    assert [m["content"] for m in context.messages] == [huge]
    assert context.tokens == message_tokens(huge) and context.truncated


def test_summary_stands_for_older_messages() -> None:
    context = build_context(
        system_prompt="sys",
        summary="they said hello",
        newest_first=_messages("a", "b", "c", "d"),
        budget_tokens=1000,
        summary_through_seq=2,
    )
    contents = [m["content"] for m in context.messages]
    assert contents[0] == "sys" and "they said hello" in contents[1]
    assert contents[2:] == ["c", "d"]


def test_incomplete_and_empty_replies_are_left_out() -> None:
    newest = _messages("q", "half", "q2")
    newest[1].status = "incomplete"
    context = build_context(
        system_prompt=None, summary=None, newest_first=newest, budget_tokens=100
    )
    assert [m["content"] for m in context.messages] == ["q", "q2"]


def test_lazy_source_is_consumed_only_until_budget() -> None:
    consumed = []

    def source():  # type: ignore[no-untyped-def]
        for message in _messages(*["word"] * 100):
            consumed.append(message.seq)
            yield message

    build_context(system_prompt=None, summary=None, newest_first=source(), budget_tokens=20)
    assert len(consumed) < 10


def test_estimator_is_pluggable() -> None:
    context = build_context(
        system_prompt=None,
        summary=None,
        newest_first=_messages("a b c"),
        budget_tokens=100,
        estimator=lambda text: 50,
    )
    assert context.tokens == 50 + MESSAGE_OVERHEAD_TOKENS
    assert estimate_tokens("") == 0 and estimate_tokens("abcd efgh") == 3


def test_summary_never_takes_more_than_a_quarter_of_the_budget() -> None:
    context = build_context(
        system_prompt=None,
        summary="word " * 5000,
        newest_first=_messages("latest"),
        budget_tokens=400,
    )
    summary_tokens = estimate_tokens(context.messages[0]["content"])
    assert summary_tokens <= 100 + 10
    assert context.messages[-1]["content"] == "latest"


def test_cut_to_tokens_cuts_at_a_word() -> None:
    from chatkeep.domain.tokens import cut_to_tokens

    assert cut_to_tokens("short text", 100) == "short text"
    cut = cut_to_tokens("alpha beta gamma delta " * 50, 20)
    assert estimate_tokens(cut) <= 21 and cut.endswith(" …")
    assert cut.startswith("alpha beta")
