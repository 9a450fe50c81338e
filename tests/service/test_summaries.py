"""Summaries of older turns: made in the background, skipped when the queue is full."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from chatkeep.domain.context import build_context
from chatkeep.domain.records import Conversation
from chatkeep.domain.tokens import estimate_tokens
from chatkeep.providers.registry import ProviderRegistry
from chatkeep.service.job_queue import BoundedJobQueue
from chatkeep.service.summaries import Summarizer
from chatkeep.settings import ModelConfig
from chatkeep.storage.memory import MemoryStore

OWNER = "o"


@pytest.fixture
async def store() -> AsyncIterator[MemoryStore]:
    backend = MemoryStore()
    await backend.open()
    yield backend
    await backend.close()


async def _conversation_with_turns(store: MemoryStore, turns: int) -> Conversation:
    conversation = await store.create_conversation(OWNER, model="small")
    for n in range(turns):
        start = await store.begin_reply(
            OWNER, conversation.id, content=f"question {n} " * 10, client_message_id=None
        )
        await store.finish_reply(
            OWNER,
            conversation.id,
            reply_to=start.user_message.id,
            content=f"answer {n} " * 10,
            status="complete",
        )
    return await store.get_conversation(OWNER, conversation.id)


def _summarizer(store: MemoryStore, queue: BoundedJobQueue, invalidated: list[str]) -> Summarizer:
    providers = ProviderRegistry({"small": ModelConfig(provider="echo", context_tokens=128)})
    return Summarizer(
        store=store,
        providers=providers,
        queue=queue,
        threshold_tokens=20,
        priority=5,
        on_summary=invalidated.append,
    )


async def _context(store: MemoryStore, conversation: Conversation):  # type: ignore[no-untyped-def]
    newest = await store.recent_messages(OWNER, conversation.id, limit=1000)
    return build_context(
        system_prompt=None,
        summary=conversation.summary,
        newest_first=newest,
        budget_tokens=128,
        summary_through_seq=conversation.summary_through_seq,
    )


async def test_truncated_context_gets_a_summary_in_background(store: MemoryStore) -> None:
    conversation = await _conversation_with_turns(store, 12)
    queue = BoundedJobQueue(maxsize=4, concurrency=1, name="summaries")
    invalidated: list[str] = []
    summarizer = _summarizer(store, queue, invalidated)
    queue.start()
    try:
        context = await _context(store, conversation)
        assert context.truncated
        assert summarizer.consider(conversation, context)
        await asyncio.wait_for(queue.join(), 5)
    finally:
        await queue.stop()
    stored = await store.get_conversation(OWNER, conversation.id)
    assert stored.summary and stored.summary.startswith("echo:")
    assert 0 < stored.summary_through_seq < context.oldest_seq
    assert invalidated == [conversation.id]
    page = await store.list_messages(OWNER, conversation.id, limit=100)
    assert len(page.items) == 24  # the history itself is never truncated
    # The next context carries the summary instead of the summarised messages.
    after = await _context(store, stored)
    assert "Summary of the earlier conversation" in after.messages[0]["content"]


async def test_untruncated_context_needs_no_summary(store: MemoryStore) -> None:
    conversation = await _conversation_with_turns(store, 1)
    queue = BoundedJobQueue(maxsize=4, concurrency=1)
    summarizer = _summarizer(store, queue, [])
    assert not summarizer.consider(conversation, await _context(store, conversation))
    assert queue.queued == 0
    await queue.stop()


async def test_full_queue_skips_and_counts_without_blocking(store: MemoryStore) -> None:
    queue = BoundedJobQueue(maxsize=1, concurrency=1)  # not started: jobs stay queued
    summarizer = _summarizer(store, queue, [])
    first = await _conversation_with_turns(store, 12)
    second = await _conversation_with_turns(store, 12)
    assert summarizer.consider(first, await _context(store, first))
    assert not summarizer.consider(second, await _context(store, second))
    assert not summarizer.consider(first, await _context(store, first))  # already queued
    stats = queue.stats()
    assert stats["skipped_full"] == 1 and stats["skipped_duplicate"] == 1
    await queue.stop()


async def test_summaries_are_cut_to_their_token_limit(store: MemoryStore) -> None:
    conversation = await _conversation_with_turns(store, 12)
    queue = BoundedJobQueue(maxsize=4, concurrency=1)
    providers = ProviderRegistry({"small": ModelConfig(provider="echo", context_tokens=128)})
    summarizer = Summarizer(
        store=store,
        providers=providers,
        queue=queue,
        threshold_tokens=20,
        priority=5,
        max_tokens=16,
    )
    context = await _context(store, conversation)
    assert await summarizer.summarize(
        OWNER, conversation.id, "small", before_seq=context.oldest_seq
    )
    stored = await store.get_conversation(OWNER, conversation.id)
    assert stored.summary is not None and estimate_tokens(stored.summary) <= 17
    await queue.stop()
