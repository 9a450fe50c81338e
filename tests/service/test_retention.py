"""The retention policy: what a pass archives and deletes, in batches, on a stepped clock; the
background task's life (nothing when unset, a pass per interval, a clean stop)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from chatkeep.cache.working_set import WorkingSet
from chatkeep.domain.records import Conversation
from chatkeep.errors import NotFound, StorageError
from chatkeep.service.retention import DAY_SECONDS, RetentionPass, RetentionRunner
from chatkeep.settings import RetentionSettings
from chatkeep.storage.memory import MemoryStore

NOW = 1_800_000_000.0
OWNER = "alice"


def _clock() -> float:
    return NOW


async def _idle(store: MemoryStore, cid: str, days: float, owner: str = OWNER) -> None:
    at = NOW - days * DAY_SECONDS
    conversation = Conversation(cid, owner, None, "echo", None, {}, "active", at, at, at)
    assert await store.import_conversation(owner, conversation, [])


class CountingStore(MemoryStore):
    """Records the limit of every retention batch asked for."""

    def __init__(self) -> None:
        super().__init__(clock=_clock)
        self.batches: list[tuple[str, int]] = []

    async def archive_idle(self, before: float, limit: int) -> list[str]:
        self.batches.append(("archive", limit))
        return await super().archive_idle(before, limit)

    async def delete_idle(self, before: float, limit: int) -> list[str]:
        self.batches.append(("delete", limit))
        return await super().delete_idle(before, limit)


def _runner(store: MemoryStore, **policy: Any) -> RetentionRunner:
    return RetentionRunner(store, RetentionSettings(**policy), clock=_clock)


async def test_a_pass_deletes_the_long_idle_and_archives_the_idle() -> None:
    store = CountingStore()
    await _idle(store, "fresh", 1)
    await _idle(store, "idle", 40)
    await _idle(store, "long_idle", 100)
    await _idle(store, "someone_elses", 100, owner="bob")
    archived: list[str] = []
    deleted: list[str] = []
    runner = RetentionRunner(
        store,
        RetentionSettings(archive_after_days=30, delete_after_days=90),
        clock=_clock,
        on_archived=archived.append,
        on_deleted=deleted.append,
    )
    result = await runner.run_once()
    assert (result.archived, result.deleted) == (1, 2)
    assert archived == ["idle"] and sorted(deleted) == ["long_idle", "someone_elses"]
    assert (await store.get_conversation(OWNER, "idle")).status == "archived"
    assert (await store.get_conversation(OWNER, "fresh")).status == "active"
    with pytest.raises(NotFound):
        await store.get_conversation(OWNER, "long_idle")
    # Deletes come first: nothing is archived only to be deleted in the same pass.
    assert [kind for kind, _ in store.batches] == ["delete", "archive"]
    stats = runner.stats()
    assert (stats["runs"], stats["archived_total"], stats["deleted_total"]) == (1, 1, 2)
    assert stats["last_run_at"] == NOW


async def test_a_pass_works_through_a_backlog_a_bounded_batch_at_a_time() -> None:
    store = CountingStore()
    for n in range(5):
        await _idle(store, f"c{n}", 40 + n)
    runner = RetentionRunner(
        store, RetentionSettings(archive_after_days=30, batch_size=2), clock=_clock
    )
    assert (await runner.run_once()).archived == 5
    assert store.batches == [("archive", 2)] * 3  # 2 + 2 + 1: the short batch ends the pass
    assert (await runner.run_once()).archived == 0
    assert runner.archived_total == 5 and runner.runs == 2


async def test_a_conversation_with_a_reply_open_is_left_alone() -> None:
    store = MemoryStore(clock=lambda: NOW - 200 * DAY_SECONDS)
    generating = await store.create_conversation(OWNER, model="echo")
    await store.begin_reply(OWNER, generating.id, content="hi", client_message_id=None)
    runner = _runner(store, archive_after_days=1, delete_after_days=2)
    assert await runner.run_once() == RetentionPass(archived=0, deleted=0)
    assert (await store.get_conversation(OWNER, generating.id)).status == "active"


async def test_the_callbacks_keep_the_working_set_true_to_storage() -> None:
    store = MemoryStore()
    await _idle(store, "idle", 40)
    await _idle(store, "long_idle", 100)
    working_set = WorkingSet(store)
    for cid in ("idle", "long_idle"):
        await working_set.get(OWNER, cid)
    runner = RetentionRunner(
        store,
        RetentionSettings(archive_after_days=30, delete_after_days=90),
        clock=_clock,
        on_archived=working_set.invalidate,
        on_deleted=working_set.invalidate,
    )
    await runner.run_once()
    assert (await working_set.get(OWNER, "idle")).conversation.status == "archived"
    with pytest.raises(NotFound):
        await working_set.get(OWNER, "long_idle")
    await working_set.close()


async def test_without_a_policy_nothing_starts_and_nothing_is_touched() -> None:
    store = CountingStore()
    await _idle(store, "ancient", 10_000)
    runner = _runner(store)
    assert not runner.enabled
    runner.start()
    assert not runner.running
    await runner.run_once()
    assert store.batches == []
    await runner.stop()


class SteppedSleep:
    """A sleep that returns only when the test says so."""

    def __init__(self) -> None:
        self.asked: asyncio.Queue[float] = asyncio.Queue()
        self._go = asyncio.Event()

    async def __call__(self, seconds: float) -> None:
        self.asked.put_nowait(seconds)
        await self._go.wait()
        self._go.clear()

    def step(self) -> None:
        self._go.set()


async def test_the_task_runs_a_pass_per_interval_and_stops_cleanly() -> None:
    store = CountingStore()
    sleep = SteppedSleep()
    runner = RetentionRunner(
        store,
        RetentionSettings(delete_after_days=90, interval_seconds=600),
        clock=_clock,
        sleep=sleep,
    )
    runner.start()
    with pytest.raises(RuntimeError):
        runner.start()
    # A pass at start, then a wait of one interval.
    assert await asyncio.wait_for(sleep.asked.get(), timeout=5) == 600
    assert runner.runs == 1
    await _idle(store, "long_idle", 100)
    sleep.step()
    assert await asyncio.wait_for(sleep.asked.get(), timeout=5) == 600
    assert (runner.runs, runner.deleted_total) == (2, 1)
    await runner.stop()
    assert not runner.running
    await runner.stop()  # twice is fine


class FailingStore(CountingStore):
    async def delete_idle(self, before: float, limit: int) -> list[str]:
        raise StorageError("storage is closed")


async def test_a_failed_pass_is_counted_and_the_next_one_still_runs() -> None:
    sleep = SteppedSleep()
    runner = RetentionRunner(
        FailingStore(), RetentionSettings(delete_after_days=90), clock=_clock, sleep=sleep
    )
    runner.start()
    await asyncio.wait_for(sleep.asked.get(), timeout=5)
    sleep.step()
    await asyncio.wait_for(sleep.asked.get(), timeout=5)
    assert (runner.failed_runs, runner.runs) == (2, 0)
    assert runner.running
    await runner.stop()
