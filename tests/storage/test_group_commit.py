"""The SQLite writer survives any single bad write, and nothing waits on it forever."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from chatkeep.domain.records import Usage
from chatkeep.errors import NotFound, StorageError
from chatkeep.storage.sqlite import SQLiteStore
from chatkeep.storage.sqlite.connection import ThreadedConnection
from chatkeep.storage.sqlite.group_commit import CommitterState, GroupCommitter

#: Generous: a healthy write answers in milliseconds; the bug this guards is "never".
MUST_NOT_HANG = 10.0


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    backend = SQLiteStore(tmp_path / "db.sqlite3")
    await backend.open()
    try:
        yield backend
    finally:
        await backend.close()


@pytest.fixture
async def committer(tmp_path: Path) -> AsyncIterator[GroupCommitter]:
    connection = ThreadedConnection(tmp_path / "raw.sqlite3", name="test-writer", pragmas=[])
    await connection.connect()
    await connection.run(lambda conn: conn.execute("CREATE TABLE t (x INTEGER)"))
    group = GroupCommitter(connection)
    group.start()
    try:
        yield group
    finally:
        await group.close()
        await connection.close()


def _insert(value: int) -> object:
    return lambda conn: conn.execute("INSERT INTO t VALUES (?)", (value,)).rowcount


def _count(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM t").fetchone()[0])


async def test_usage_beyond_64_bits_fails_that_write_alone(store: SQLiteStore) -> None:
    conversation = await store.create_conversation("o", model="echo")
    start = await store.begin_reply("o", conversation.id, content="q", client_message_id=None)
    with pytest.raises(StorageError):
        async with asyncio.timeout(MUST_NOT_HANG):
            await store.finish_reply(
                "o",
                conversation.id,
                reply_to=start.user_message.id,
                content="a",
                status="complete",
                usage=Usage(2**64, 1),
            )
    # The writer lives on: the reply is still open and closes with sane numbers.
    async with asyncio.timeout(MUST_NOT_HANG):
        reply = await store.finish_reply(
            "o",
            conversation.id,
            reply_to=start.user_message.id,
            content="a",
            status="complete",
            usage=Usage(3, 1),
        )
        await store.create_conversation("o", model="echo")
    assert reply.seq == 2
    assert (await store.get_conversation("o", conversation.id)).usage == Usage(3, 1)


async def test_any_exception_in_a_write_is_answered_to_its_writer(
    committer: GroupCommitter,
) -> None:
    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO t VALUES (99)")
        raise KeyError("a bug inside a write")

    async with asyncio.timeout(MUST_NOT_HANG):
        results = await asyncio.gather(
            committer.write(_insert(1)),
            committer.write(broken),
            committer.write(_insert(2)),
            return_exceptions=True,
        )
        assert results[0] == 1 and results[2] == 1
        assert isinstance(results[1], StorageError)
        assert "KeyError" in results[1].message
        assert await committer.write(_insert(3)) == 1  # the next write succeeds
        assert await committer.write(_count) == 3  # the broken write was rolled back
    assert committer.state is CommitterState.RUNNING


async def test_chatkeep_errors_reach_the_writer_unchanged(committer: GroupCommitter) -> None:
    def missing(conn: sqlite3.Connection) -> None:
        raise NotFound("conversation x not found")

    with pytest.raises(NotFound):
        await committer.write(missing)


async def test_close_is_clean_after_failed_writes(committer: GroupCommitter) -> None:
    def overflow(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO t VALUES (?)", (2**70,))

    with pytest.raises(StorageError):
        await committer.write(overflow)
    await committer.close()  # does not re-raise the write's error
    assert committer.state is CommitterState.CLOSED


async def test_write_after_close_fails_at_once(committer: GroupCommitter) -> None:
    await committer.close()
    with pytest.raises(StorageError, match="closed"):
        async with asyncio.timeout(MUST_NOT_HANG):
            await committer.write(_insert(1))


async def test_write_after_the_writer_died_fails_at_once(committer: GroupCommitter) -> None:
    (task,) = [t for t in asyncio.all_tasks() if t.get_name() == "sqlite-group-commit"]
    task.cancel()
    await asyncio.wait([task])
    assert committer.state is CommitterState.FAILED
    with pytest.raises(StorageError, match="failed"):
        async with asyncio.timeout(MUST_NOT_HANG):
            await committer.write(_insert(1))
    await committer.close()  # closing a dead committer is quiet
    assert committer.state is CommitterState.FAILED


async def test_concurrent_closes_both_wait_for_the_queued_writes(
    committer: GroupCommitter,
) -> None:
    queued = asyncio.ensure_future(committer.write(_insert(1)))
    await asyncio.gather(committer.close(), committer.close())
    assert queued.done() and queued.result() == 1
    assert committer.state is CommitterState.CLOSED


async def test_reads_and_writes_after_close_fail_at_once(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "db.sqlite3")
    await store.open()
    conversation = await store.create_conversation("o", model="echo")
    await store.close()
    async with asyncio.timeout(MUST_NOT_HANG):
        with pytest.raises(StorageError):
            await store.get_conversation("o", conversation.id)
        with pytest.raises(StorageError):
            await store.create_conversation("o", model="echo")


async def test_a_failing_commit_observer_does_not_stop_the_writer(
    committer: GroupCommitter,
) -> None:
    def observer(seconds: float, writes: int) -> None:
        raise RuntimeError("a metrics hook with a bug")

    committer.observer = observer
    async with asyncio.timeout(MUST_NOT_HANG):
        assert await committer.write(_insert(1)) == 1
        assert await committer.write(_insert(2)) == 1
    assert committer.state is CommitterState.RUNNING


async def test_a_failed_transaction_fails_its_batch_and_the_loop_goes_on(
    committer: GroupCommitter,
) -> None:
    def ends_the_transaction(conn: sqlite3.Connection) -> None:
        conn.execute("COMMIT")  # a bug: the batch's RELEASE and COMMIT now fail

    with pytest.raises(StorageError):
        await committer.write(ends_the_transaction)
    async with asyncio.timeout(MUST_NOT_HANG):
        assert await committer.write(_insert(1)) == 1
