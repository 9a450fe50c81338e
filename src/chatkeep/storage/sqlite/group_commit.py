"""Group commit: concurrent writes share one SQLite transaction and one fsync.

Writers enqueue a function; one task takes everything queued, runs it inside
``BEGIN IMMEDIATE … COMMIT`` on the writer connection's thread (each function
in its own savepoint, so one failing write does not undo the others), and only
then resolves each writer's future. No write is acknowledged before the commit
that holds it has returned.

The committer never dies of a write: whatever a write raises is rolled back to
its savepoint and answered to that writer alone (translated by `errors.translate`);
a failed ``BEGIN`` or ``COMMIT`` fails the writers of that batch and the loop goes
on. Only cancellation ends the task; its lifecycle is explicit (`CommitterState`), and
a write that arrives when the committer is not running fails at once instead of
waiting for a task that will never answer.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from chatkeep.errors import StorageError
from chatkeep.storage.sqlite.connection import ThreadedConnection
from chatkeep.storage.sqlite.errors import translate

T = TypeVar("T")
WriteFn = Callable[[sqlite3.Connection], Any]

logger = logging.getLogger("chatkeep.storage")


class CommitterState(enum.Enum):
    """Where a `GroupCommitter` is in its life; only ``RUNNING`` accepts writes."""

    UNSTARTED = "unstarted"
    RUNNING = "running"
    CLOSING = "closing"  # commits what is queued, accepts nothing new
    CLOSED = "closed"
    FAILED = "failed"  # the task ended without close(): cancelled from outside


@dataclass(slots=True)
class _Write:
    fn: WriteFn
    future: asyncio.Future[Any]


class GroupCommitter:
    """Batches writes on one connection; ``max_batch`` bounds one transaction."""

    def __init__(self, connection: ThreadedConnection, *, max_batch: int = 256) -> None:
        self._connection = connection
        self._max_batch = max_batch
        self._pending: list[_Write] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._state = CommitterState.UNSTARTED
        self.commits = 0
        self.writes = 0
        #: Called with (seconds, writes) after each commit; metrics hook in here.
        self.observer: Callable[[float, int], None] | None = None

    @property
    def state(self) -> CommitterState:
        return self._state

    def start(self) -> None:
        """Start the committing task."""
        if self._state is not CommitterState.UNSTARTED:
            raise RuntimeError(f"cannot start a group committer that is {self._state.value}")
        self._task = asyncio.create_task(self._run(), name="sqlite-group-commit")
        self._task.add_done_callback(self._ended)
        self._state = CommitterState.RUNNING

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in a transaction; return its result once that transaction committed."""
        if self._state is not CommitterState.RUNNING:
            raise StorageError(f"storage is not accepting writes (writer {self._state.value})")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append(_Write(fn, future))
        self._wakeup.set()
        return await future

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                await self._commit(batch)
            if self._state is CommitterState.CLOSING:
                return

    async def _commit(self, batch: list[_Write]) -> None:
        started = time.perf_counter()
        try:
            outcomes = await self._connection.run(lambda conn: _run_batch(conn, batch))
        except asyncio.CancelledError:
            # The thread may still commit this batch: its writers cannot know either way.
            _fail(batch, StorageError("storage closed while committing; the write may be lost"))
            raise
        except Exception as exc:
            _fail(batch, translate(exc, "commit"))
            return
        self.commits += 1
        self.writes += len(batch)
        if self.observer is not None:
            try:
                self.observer(time.perf_counter() - started, len(batch))
            except Exception:  # a metrics hook must not take the writer down
                logger.exception("commit observer failed")
        for write, (ok, value) in zip(batch, outcomes, strict=True):
            if write.future.done():  # the writer was cancelled; the write stands
                continue
            if ok:
                write.future.set_result(value)
            else:
                write.future.set_exception(value)

    def _ended(self, task: asyncio.Task[None]) -> None:
        """The task ended: closed on purpose, or cancelled from outside (then FAILED)."""
        if self._state is CommitterState.RUNNING:
            self._state = CommitterState.FAILED
            error = None if task.cancelled() else task.exception()
            logger.error(
                "the storage writer stopped; every write fails until a restart",
                exc_info=error,
            )
        pending, self._pending = self._pending, []
        _fail(pending, StorageError(f"storage writer {self._state.value}; the write was not run"))

    async def close(self) -> None:
        """Commit what is queued, then stop. Safe to call twice; never raises a write's error."""
        if self._state is CommitterState.RUNNING:
            self._state = CommitterState.CLOSING
            self._wakeup.set()
        if self._task is not None:  # every caller waits, so none returns before the end
            await asyncio.wait([self._task])
        if self._state is CommitterState.CLOSING or self._state is CommitterState.UNSTARTED:
            self._state = CommitterState.CLOSED


def _fail(batch: list[_Write], error: Exception) -> None:
    for write in batch:
        if not write.future.done():
            write.future.set_exception(error)


def _run_batch(conn: sqlite3.Connection, batch: list[_Write]) -> list[tuple[bool, Any]]:
    """Runs on the writer thread: one transaction, one savepoint per write."""
    outcomes: list[tuple[bool, Any]] = []
    conn.execute("BEGIN IMMEDIATE")
    try:
        for write in batch:
            conn.execute("SAVEPOINT write")
            try:
                outcomes.append((True, write.fn(conn)))
            except Exception as exc:  # answered to this writer alone; the batch goes on
                conn.execute("ROLLBACK TO write")
                outcomes.append((False, translate(exc, "write")))
            conn.execute("RELEASE write")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return outcomes
