"""Size estimates: within a factor of two of what CPython really holds.

Checked two ways: a deep ``sys.getsizeof`` walk over one entry (strings shared between
records counted once), and ``tracemalloc`` over a cache full of entries, bookkeeping
included.
"""

from __future__ import annotations

import sys
import tracemalloc
from typing import Any

import pytest

from chatkeep.cache.byte_lru import ByteLRU
from chatkeep.cache.sizing import (
    CACHE_ENTRY,
    conversation_size,
    json_size,
    message_size,
    text_size,
)
from chatkeep.cache.working_set import WorkingEntry, entry_size
from chatkeep.domain.records import Conversation, Message, Usage
from chatkeep.storage.base import new_id


def deep_sizeof(root: object) -> int:
    """What CPython really holds for ``root``: ``sys.getsizeof`` over everything reachable."""
    seen: set[int] = set()
    stack: list[object] = [root]
    total = 0
    while stack:
        obj = stack.pop()
        if obj is None or isinstance(obj, bool) or id(obj) in seen:
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        if isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, list | tuple):
            stack.extend(obj)
        elif not isinstance(obj, str | int | float):
            for klass in type(obj).__mro__:
                for slot in klass.__dict__.get("__slots__", ()):
                    stack.append(getattr(obj, slot))
    return total


def fresh(text: str) -> str:
    """A new string object, as a database driver returns one per row."""
    return "".join([text[:1], text[1:]])


def sample_entry(
    content: str, turns: int, *, metadata: dict[str, Any] | None = None
) -> WorkingEntry:
    cid = new_id("conv")
    conversation = Conversation(
        id=cid,
        owner_id=fresh("owner-with-a-longish-name"),
        title=fresh("A conversation about things"),
        model=fresh("llama3.1:8b"),
        system_prompt=fresh("You are a helpful assistant. " * 4),
        metadata=metadata or {},
        status="active",
        created_at=1.5,
        updated_at=2.5,
        last_activity=3.5,
        message_count=2 * turns,
        usage=Usage(1000, 2000),
        summary=fresh("Earlier, the user asked about several things. " * 3),
        summary_through_seq=2,
    )
    messages = []
    for seq in range(1, 2 * turns + 1):
        messages.append(
            Message(
                id=new_id("msg"),
                conversation_id=fresh(cid),
                seq=seq,
                role="user" if seq % 2 else "assistant",
                content=fresh(f"{seq}: {content}"),
                status="complete",
                created_at=1000.0 + seq,
                client_message_id=new_id("client") if seq % 2 else None,
                reply_to=None if seq % 2 else new_id("msg"),
                usage=None if seq % 2 else Usage(10, 20),
            )
        )
    return WorkingEntry(conversation, tuple(messages))


SAMPLES = {
    "short ascii": ("ok", 1),
    "long ascii": ("The quick brown fox jumps over the lazy dog. " * 40, 8),
    "accented": ("Ça coûte très cher, dit-elle à l'été. " * 20, 4),
    "cjk": ("这是一个关于内存限制的对话。" * 30, 4),
    "emoji": ("🙂🚀" * 100, 2),
    "many short": ("fine, thanks", 32),
}


@pytest.mark.parametrize("name", SAMPLES)
def test_the_size_estimate_is_within_a_factor_of_two_of_the_real_size(name: str) -> None:
    content, turns = SAMPLES[name]
    entry = sample_entry(content, turns, metadata={"tags": ["a", "b"], "source": {"app": "x"}})
    bookkeeping = CACHE_ENTRY + text_size(entry.conversation.id)
    estimate = entry_size(entry) - bookkeeping
    real = deep_sizeof(entry)
    assert 0.5 <= estimate / real <= 2.0, (estimate, real)
    assert 0.5 <= conversation_size(entry.conversation) / deep_sizeof(entry.conversation) <= 2.0
    for message in entry.messages:
        assert 0.5 <= message_size(message) / deep_sizeof(message) <= 2.0


def test_the_size_estimate_matches_traced_allocations_with_bookkeeping() -> None:
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        cache: ByteLRU[str, WorkingEntry] = ByteLRU(10**9, getsizeof=entry_size)
        for n in range(300):
            content, turns = list(SAMPLES.values())[n % len(SAMPLES)]
            entry = sample_entry(content, turns)
            cache[fresh(entry.conversation.id)] = entry
        del entry
        traced = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert 0.5 <= cache.currsize / traced <= 2.0, (cache.currsize, traced)


@pytest.mark.parametrize(
    "value",
    [
        {},
        {"user": "ada", "tags": ["x", "y", "z"], "n": 3, "ratio": 0.5, "ok": True, "no": None},
        {"nested": {"deeper": [{"a": "b" * 100}, [1, 2, 3]]}},
        ["é" * 50, "中" * 50, ("tuple", 1)],
    ],
)
def test_json_size_follows_nested_values(value: Any) -> None:
    assert 0.5 <= json_size(value) / deep_sizeof(value) <= 2.0


def test_json_size_does_not_recurse_on_deep_nesting() -> None:
    value: Any = "leaf"
    for _ in range(10_000):
        value = [value]
    assert json_size(value) > 10_000 * 56


def test_text_size_counts_utf8() -> None:
    assert text_size("abc") - text_size("") == 3
    assert text_size("é") - text_size("") == 2
    assert text_size("🙂") - text_size("") == 4
