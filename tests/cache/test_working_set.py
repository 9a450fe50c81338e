"""WorkingSet: loads on a miss, follows commits, stays within its bytes, loses nothing."""

from __future__ import annotations

import asyncio

import pytest

from chatkeep.cache.working_set import DEFAULT_WORKING_SET_BYTES, WorkingSet, entry_size
from chatkeep.domain.records import Conversation, Message
from chatkeep.errors import NotFound
from chatkeep.memory.governor import Reclaimable
from chatkeep.storage.memory import MemoryStore

OWNER = "owner-a"
OTHER = "owner-b"


class CountingStore(MemoryStore):
    """A memory store that counts the reads the working set makes, and can hold one.

    With ``hold`` set, `recent_messages` reads its answer, signals ``entered`` and waits
    for ``hold`` before returning it, so a test can change things while a load is open.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conversation_reads = 0
        self.message_reads = 0
        self.hold: asyncio.Event | None = None
        self.entered = asyncio.Event()

    @property
    def reads(self) -> int:
        return self.conversation_reads + self.message_reads

    async def get_conversation(self, owner_id: str, conversation_id: str) -> Conversation:
        self.conversation_reads += 1
        return await super().get_conversation(owner_id, conversation_id)

    async def recent_messages(
        self, owner_id: str, conversation_id: str, *, limit: int, before: int | None = None
    ) -> list[Message]:
        self.message_reads += 1
        messages = await super().recent_messages(
            owner_id, conversation_id, limit=limit, before=before
        )
        if self.hold is not None:
            self.entered.set()
            await self.hold.wait()
        return messages


async def conversation_with(store: MemoryStore, turns: int, owner: str = OWNER) -> str:
    """A conversation holding ``turns`` user/assistant pairs; returns its id."""
    conversation = await store.create_conversation(owner, model="echo", title="t")
    for turn in range(turns):
        await exchange(store, owner, conversation.id, f"question {turn}")
    return conversation.id


async def exchange(store: MemoryStore, owner: str, conversation_id: str, text: str) -> None:
    start = await store.begin_reply(owner, conversation_id, content=text, client_message_id=None)
    await store.finish_reply(
        owner,
        conversation_id,
        reply_to=start.user_message.id,
        content=f"answer to {text}",
        status="complete",
    )


async def stored_messages(store: MemoryStore, owner: str, conversation_id: str) -> list[Message]:
    page = await store.list_messages(owner, conversation_id, limit=10_000)
    return page.items


# -- loading and hits ----------------------------------------------------------------


async def test_a_miss_loads_the_record_and_recent_messages_newest_last() -> None:
    store = CountingStore()
    cid = await conversation_with(store, 3)
    working = WorkingSet(store)
    entry = await working.get(OWNER, cid)
    assert entry.conversation == await store.get_conversation(OWNER, cid)
    assert list(entry.messages) == await stored_messages(store, OWNER, cid)
    assert [m.seq for m in entry.messages] == [1, 2, 3, 4, 5, 6]
    assert not entry.has_older
    assert entry.last_seq == 6
    assert working.stats()["loads"] == 1


async def test_a_hit_does_not_touch_the_store() -> None:
    store = CountingStore()
    cid = await conversation_with(store, 2)
    working = WorkingSet(store)
    first = await working.get(OWNER, cid)
    reads = store.reads
    assert reads == 2
    for _ in range(10):
        assert await working.get(OWNER, cid) is first
    assert store.reads == reads
    stats = working.stats()
    assert (stats["hits"], stats["misses"], stats["loads"]) == (10, 1, 1)


async def test_an_unknown_conversation_is_not_found_and_not_cached() -> None:
    working = WorkingSet(MemoryStore())
    with pytest.raises(NotFound):
        await working.get(OWNER, "conv_missing")
    assert len(working) == 0
    assert working.stats()["pending_loads"] == 0


async def test_only_the_most_recent_messages_are_kept() -> None:
    store = MemoryStore()
    cid = await conversation_with(store, 5)  # seq 1..10
    working = WorkingSet(store, max_recent_messages=4)
    entry = await working.get(OWNER, cid)
    assert [m.seq for m in entry.messages] == [7, 8, 9, 10]
    assert entry.has_older


async def test_a_token_cap_keeps_the_newest_messages_that_fit() -> None:
    store = MemoryStore()
    conversation = await store.create_conversation(OWNER, model="echo")
    for text in ["x" * 400, "y" * 40, "z" * 40]:
        await store.begin_reply(OWNER, conversation.id, content=text, client_message_id=None)
        await store.finish_reply(
            OWNER,
            conversation.id,
            reply_to=(await store.get_conversation(OWNER, conversation.id)).open_reply_to or "",
            content="ok",
            status="complete",
        )
    # Default estimate: 40 chars → 10 tokens, "ok" → 1, each plus 4 of overhead.
    working = WorkingSet(store, max_recent_tokens=40)
    entry = await working.get(OWNER, conversation.id)
    assert [m.content for m in entry.messages] == ["y" * 40, "ok", "z" * 40, "ok"]
    # Alone over the cap, the newest message is still kept.
    tiny = WorkingSet(store, max_recent_tokens=1)
    assert [m.seq for m in (await tiny.get(OWNER, conversation.id)).messages] == [6]


# -- write-through -------------------------------------------------------------------


async def test_commits_are_recorded_without_reading_the_store() -> None:
    store = CountingStore()
    cid = await conversation_with(store, 1)
    working = WorkingSet(store)
    await working.get(OWNER, cid)
    reads = store.reads

    start = await store.begin_reply(OWNER, cid, content="next", client_message_id=None)
    working.record_messages(OWNER, cid, start.conversation, start.user_message)
    entry = await working.get(OWNER, cid)
    assert store.reads == reads
    assert entry.messages[-1] == start.user_message
    assert entry.conversation.open_reply_to == start.user_message.id

    reply = await store.finish_reply(
        OWNER, cid, reply_to=start.user_message.id, content="done", status="complete"
    )
    after = await MemoryStore.get_conversation(store, OWNER, cid)  # uncounted read
    working.record_messages(OWNER, cid, after, reply)
    entry = await working.get(OWNER, cid)
    assert store.reads == reads
    assert entry.conversation.open_reply_to is None
    assert list(entry.messages) == await stored_messages(store, OWNER, cid)
    # Recording the same commit twice changes nothing.
    working.record_messages(OWNER, cid, after, reply)
    assert (await working.get(OWNER, cid)).messages == entry.messages


async def test_recording_trims_to_the_most_recent_messages() -> None:
    store = MemoryStore()
    cid = await conversation_with(store, 2)
    working = WorkingSet(store, max_recent_messages=3)
    await working.get(OWNER, cid)
    for turn in range(3):
        start = await store.begin_reply(OWNER, cid, content=f"q{turn}", client_message_id=None)
        working.record_messages(OWNER, cid, start.conversation, start.user_message)
        reply = await store.finish_reply(
            OWNER, cid, reply_to=start.user_message.id, content="a", status="complete"
        )
        working.record_messages(OWNER, cid, await store.get_conversation(OWNER, cid), reply)
    entry = working.peek(cid)
    assert entry is not None
    assert [m.seq for m in entry.messages] == [8, 9, 10]
    assert (await stored_messages(store, OWNER, cid))[-3:] == list(entry.messages)


async def test_a_record_that_does_not_line_up_drops_the_entry() -> None:
    store = MemoryStore()
    cid = await conversation_with(store, 1)
    working = WorkingSet(store)
    await working.get(OWNER, cid)
    start = await store.begin_reply(OWNER, cid, content="q", client_message_id=None)
    reply = await store.finish_reply(
        OWNER, cid, reply_to=start.user_message.id, content="a", status="complete"
    )
    # The user message was never recorded: the reply leaves a gap.
    working.record_messages(OWNER, cid, await store.get_conversation(OWNER, cid), reply)
    assert working.peek(cid) is None
    # A record older than its messages disagrees too.
    entry = await working.get(OWNER, cid)
    assert entry.last_seq == 4
    await exchange(store, OWNER, cid, "more")
    messages = await stored_messages(store, OWNER, cid)
    working.record_messages(OWNER, cid, entry.conversation, *messages[-2:])
    assert working.peek(cid) is None
    assert list((await working.get(OWNER, cid)).messages) == messages


async def test_a_new_conversation_is_cached_from_its_first_commit() -> None:
    store = CountingStore()
    conversation = await store.create_conversation(OWNER, model="echo")
    working = WorkingSet(store)
    working.record_messages(OWNER, conversation.id, conversation)
    assert working.peek(conversation.id) is None  # no messages: nothing proves the window
    start = await store.begin_reply(OWNER, conversation.id, content="hi", client_message_id=None)
    working.record_messages(OWNER, conversation.id, start.conversation, start.user_message)
    entry = await working.get(OWNER, conversation.id)
    assert store.reads == 0
    assert entry.messages == (start.user_message,)


async def test_a_partial_window_with_nothing_cached_is_not_cached() -> None:
    store = MemoryStore()
    cid = await conversation_with(store, 3)
    working = WorkingSet(store)
    start = await store.begin_reply(OWNER, cid, content="q", client_message_id=None)
    working.record_messages(OWNER, cid, start.conversation, start.user_message)
    assert working.peek(cid) is None


async def test_record_messages_refuses_records_of_the_wrong_conversation() -> None:
    store = MemoryStore()
    cid = await conversation_with(store, 1)
    other = await conversation_with(store, 1)
    working = WorkingSet(store)
    conversation = await store.get_conversation(OWNER, cid)
    with pytest.raises(ValueError):
        working.record_messages(OTHER, cid, conversation)
    with pytest.raises(ValueError):
        working.record_messages(OWNER, other, conversation)
    foreign = (await stored_messages(store, OWNER, other))[0]
    with pytest.raises(ValueError):
        working.record_messages(OWNER, cid, conversation, foreign)


async def test_invalidate_forgets_and_the_next_get_reloads() -> None:
    store = CountingStore()
    cid = await conversation_with(store, 1)
    working = WorkingSet(store)
    await working.get(OWNER, cid)
    await store.update_conversation(OWNER, cid, title="renamed")
    working.invalidate(cid)
    working.invalidate(cid)  # twice is harmless
    assert working.peek(cid) is None
    entry = await working.get(OWNER, cid)
    assert entry.conversation.title == "renamed"
    assert working.stats()["loads"] == 2


# -- bounds --------------------------------------------------------------------------


async def test_thousands_of_conversations_stay_within_the_byte_bound() -> None:
    store = MemoryStore()
    ids = [await conversation_with(store, 1) for _ in range(2000)]
    working = WorkingSet(store, maxsize=64 * 1024)
    for cid in ids:
        await working.get(OWNER, cid)
        assert working.currsize <= working.maxsize
    assert working.currsize == sum(entry_size(e) for e in map(working.peek, ids) if e)
    assert len(working) < 200
    assert working.stats()["evictions"] == 2000 - len(working)
    # The newest are the ones kept.
    assert working.peek(ids[-1]) is not None
    assert working.peek(ids[0]) is None


async def test_eviction_never_loses_data() -> None:
    store = MemoryStore()
    ids = [await conversation_with(store, 3) for _ in range(50)]
    working = WorkingSet(store, maxsize=8 * 1024)
    first = await working.get(OWNER, ids[0])
    for cid in ids[1:]:
        await working.get(OWNER, cid)
    assert working.peek(ids[0]) is None
    again = await working.get(OWNER, ids[0])
    assert again is not first
    assert again.messages == first.messages
    assert again.conversation == first.conversation
    assert list(again.messages) == await stored_messages(store, OWNER, ids[0])


async def test_an_entry_bigger_than_the_working_set_is_served_but_not_cached() -> None:
    store = MemoryStore()
    conversation = await store.create_conversation(OWNER, model="echo")
    await exchange(store, OWNER, conversation.id, "x" * 5000)
    working = WorkingSet(store, maxsize=2000)
    entry = await working.get(OWNER, conversation.id)
    assert entry.messages[0].content == "x" * 5000
    assert len(working) == 0
    assert working.stats()["too_large"] == 1


async def test_reclaim_gives_back_bytes_for_the_memory_governor() -> None:
    store = MemoryStore()
    ids = [await conversation_with(store, 1) for _ in range(10)]
    working = WorkingSet(store, name="working_set")
    assert isinstance(working, Reclaimable)
    for cid in ids:
        await working.get(OWNER, cid)
    held = working.nbytes()
    freed = working.reclaim(0.5)
    assert freed >= held / 2
    assert working.nbytes() == held - freed
    assert working.peek(ids[0]) is None
    assert working.peek(ids[-1]) is not None
    assert working.maxsize == DEFAULT_WORKING_SET_BYTES


# -- concurrency ---------------------------------------------------------------------


async def test_concurrent_misses_share_one_load() -> None:
    store = CountingStore()
    cid = await conversation_with(store, 2)
    store.hold = asyncio.Event()
    working = WorkingSet(store)
    tasks = [asyncio.create_task(working.get(OWNER, cid)) for _ in range(5)]
    async with asyncio.timeout(5):
        await store.entered.wait()
    for _ in range(3):
        await asyncio.sleep(0)  # let every waiter reach the shared load
    assert working.stats()["pending_loads"] == 1
    # A waiter that gives up does not cancel the load the others wait for.
    tasks[0].cancel()
    store.hold.set()
    async with asyncio.timeout(5):
        results = await asyncio.gather(*tasks[1:])
    assert tasks[0].cancelled()
    assert all(result is results[0] for result in results)
    assert (store.conversation_reads, store.message_reads) == (1, 1)
    stats = working.stats()
    assert (stats["loads"], stats["shared_loads"], stats["pending_loads"]) == (1, 4, 0)
    assert working.peek(cid) is results[0]


async def test_a_load_that_raced_a_change_is_served_but_not_cached() -> None:
    store = CountingStore()
    cid = await conversation_with(store, 1)
    store.hold = asyncio.Event()
    working = WorkingSet(store)
    task = asyncio.create_task(working.get(OWNER, cid))
    async with asyncio.timeout(5):
        await store.entered.wait()
    start = await store.begin_reply(OWNER, cid, content="meanwhile", client_message_id=None)
    working.record_messages(OWNER, cid, start.conversation, start.user_message)
    store.hold.set()
    async with asyncio.timeout(5):
        stale = await task
    assert stale.last_seq == 2
    assert working.peek(cid) is None  # the old view is not kept
    store.hold = None
    fresh = await working.get(OWNER, cid)
    assert fresh.last_seq == 3
    assert working.stats()["uncached_loads"] == 1


async def test_invalidate_during_a_load_keeps_its_result_out() -> None:
    store = CountingStore()
    cid = await conversation_with(store, 1)
    store.hold = asyncio.Event()
    working = WorkingSet(store)
    task = asyncio.create_task(working.get(OWNER, cid))
    async with asyncio.timeout(5):
        await store.entered.wait()
    working.invalidate(cid)
    store.hold.set()
    async with asyncio.timeout(5):
        await task
    assert working.peek(cid) is None


async def test_a_record_and_messages_read_across_a_commit_are_not_cached() -> None:
    class CommitsBetweenReads(MemoryStore):
        async def recent_messages(
            self, owner_id: str, conversation_id: str, *, limit: int, before: int | None = None
        ) -> list[Message]:
            await exchange(self, owner_id, conversation_id, "sneaked in")
            return await super().recent_messages(
                owner_id, conversation_id, limit=limit, before=before
            )

    store = CommitsBetweenReads()
    cid = await conversation_with(store, 1)
    working = WorkingSet(store)
    entry = await working.get(OWNER, cid)
    assert entry.conversation.message_count == 2
    assert entry.last_seq == 4
    assert working.peek(cid) is None


async def test_without_a_free_load_slot_a_miss_is_served_uncached() -> None:
    store = CountingStore()
    cid = await conversation_with(store, 1)
    working = WorkingSet(store, max_pending_loads=0)
    entry = await working.get(OWNER, cid)
    assert entry.last_seq == 2
    assert working.peek(cid) is None
    assert working.stats()["uncached_loads"] == 1


async def test_close_cancels_loads_in_flight() -> None:
    store = CountingStore()
    cid = await conversation_with(store, 1)
    store.hold = asyncio.Event()
    working = WorkingSet(store)
    task = asyncio.create_task(working.get(OWNER, cid))
    async with asyncio.timeout(5):
        await store.entered.wait()
    await working.close()
    await working.close()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert working.stats()["pending_loads"] == 0
    assert len(working) == 0


# -- owners --------------------------------------------------------------------------


async def test_an_entry_is_never_returned_to_another_owner() -> None:
    store = CountingStore()
    cid = await conversation_with(store, 1, owner=OWNER)
    working = WorkingSet(store)
    mine = await working.get(OWNER, cid)
    with pytest.raises(NotFound):
        await working.get(OTHER, cid)
    assert working.peek(cid) is mine  # the owner's entry is untouched
    assert await working.get(OWNER, cid) is mine


async def test_another_owner_does_not_join_an_owners_load() -> None:
    store = CountingStore()
    cid = await conversation_with(store, 1, owner=OWNER)
    store.hold = asyncio.Event()
    working = WorkingSet(store)
    mine = asyncio.create_task(working.get(OWNER, cid))
    async with asyncio.timeout(5):
        await store.entered.wait()
    with pytest.raises(NotFound):
        await working.get(OTHER, cid)
    store.hold.set()
    async with asyncio.timeout(5):
        entry = await mine
    assert entry.conversation.owner_id == OWNER
