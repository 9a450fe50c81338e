"""Size estimates: what CPython really holds for a cached entry, no more and no less.

Checked two ways: a deep ``sys.getsizeof`` walk over one entry (strings shared between
records counted once), within a factor of two; and ``tracemalloc`` over a cache full of
entries built the way the server builds them, bookkeeping included, rounded to the
allocator's blocks, within 10 %. The leak verdict subtracts these estimates from RSS, so an
error here is a trend there.
"""

from __future__ import annotations

import gc
import sys
import tracemalloc
from typing import Any

import pytest

from chatkeep.cache.byte_lru import ByteLRU
from chatkeep.cache.sizing import (
    CACHE_ENTRY,
    block,
    conversation_size,
    int_size,
    json_size,
    message_size,
    text_size,
    vocabulary_size,
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
    estimate = entry_size(entry) - CACHE_ENTRY
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


def test_text_size_is_the_block_the_string_occupies() -> None:
    assert text_size("") == 64  # 49 bytes, in a 64-byte block
    assert text_size("a" * 15) == 64
    assert text_size("a" * 16) == 80
    assert text_size("é" * 10) == block(sys.getsizeof("é" * 10))  # one byte a character
    assert text_size("🙂" * 10) == block(sys.getsizeof("🙂" * 10))  # four


def test_blocks_follow_the_allocators() -> None:
    assert [block(n) for n in (1, 16, 17, 512)] == [16, 16, 32, 512]
    assert block(513) == 528  # malloc: an 8-byte header, 16-byte alignment
    assert block(1000) == 1008


def test_small_ints_are_shared_and_cost_nothing() -> None:
    assert int_size(0) == int_size(256) == int_size(-5) == 0
    assert int_size(257) == 32
    assert int_size(10**30) == block(sys.getsizeof(10**30))


def test_a_vocabulary_value_costs_nothing_when_it_is_the_shared_copy() -> None:
    assert vocabulary_size("assistant") == 0  # a literal: interned, shared by every record
    row_copy = fresh("assistant")  # what a database driver returns
    assert row_copy is not sys.intern("assistant")
    assert vocabulary_size(row_copy) == text_size(row_copy)
    assert vocabulary_size(None) == 0


def allocated() -> int:
    """Bytes traced now, each block as the allocator holds it."""
    gc.collect()
    return sum(block(trace.size) for trace in tracemalloc.take_snapshot().traces)


def sent_entry(index: int, content: str, exchanges: int) -> WorkingEntry:
    """An entry as the send path records it: ids and text fresh, vocabulary shared."""
    cid = new_id("conv")
    messages = []
    for seq in range(1, 2 * exchanges + 1):
        user = seq % 2 == 1
        messages.append(
            Message(
                id=new_id("msg"),
                # The user message shares the record's id string, the reply has a copy.
                conversation_id=cid if user else fresh(cid),
                seq=seq,
                role="user" if user else "assistant",
                content=fresh(f"{index}.{seq}: {content}"),
                status="complete",
                created_at=1000.0 + index + seq,
                reply_to=None if user else new_id("msg"),
                usage=None if user else Usage(60 * seq, 64),
            )
        )
    now = 5000.0 + index
    conversation = Conversation(
        id=cid,
        owner_id="default",
        title=None,
        model="echo",
        system_prompt=None,
        metadata={},
        status="active",
        created_at=1000.0 + index,
        updated_at=now,
        last_activity=now,
        message_count=2 * exchanges,
        usage=Usage(60 * exchanges, 64 * exchanges),
    )
    return WorkingEntry(conversation, tuple(messages))


def loaded_entry(index: int, content: str, exchanges: int) -> WorkingEntry:
    """The same entry as a load from the store builds it: every string a fresh copy."""
    sent = sent_entry(index, content, exchanges)
    c = sent.conversation
    conversation = Conversation(
        **{
            **{slot: getattr(c, slot) for slot in Conversation.__slots__},
            "owner_id": fresh(c.owner_id),
            "model": fresh(c.model),
            "status": fresh(c.status),
            "updated_at": c.updated_at + 0.5,
        }
    )
    messages = tuple(
        Message(
            **{
                "id": m.id,
                "conversation_id": fresh(m.conversation_id),
                "seq": m.seq,
                "role": fresh(m.role),
                "content": m.content,
                "status": fresh(m.status),
                "created_at": m.created_at,
                "reply_to": m.reply_to,
                "usage": m.usage,
            }
        )
        for m in sent.messages
    )
    return WorkingEntry(conversation, messages)


@pytest.mark.parametrize("build", [sent_entry, loaded_entry])
@pytest.mark.parametrize(("chars", "exchanges"), [(20, 1), (250, 1), (250, 8), (2000, 2)])
def test_the_estimate_matches_what_the_allocator_holds(
    build: Any, chars: int, exchanges: int
) -> None:
    content = ("The quick brown fox jumps over the lazy dog. " * 50)[:chars]
    cache: ByteLRU[str, WorkingEntry] = ByteLRU(10**10, getsizeof=entry_size)
    tracemalloc.start()
    try:
        before = allocated()
        for index in range(500):
            entry = build(index, content, exchanges)
            cache[entry.conversation.id] = entry
        del entry
        held = allocated() - before
    finally:
        tracemalloc.stop()
    assert 0.9 <= cache.currsize / held <= 1.1, (cache.currsize, held)
