"""Group commit: concurrent writes share one SQLite transaction and one fsync.

Writers enqueue a function; one task takes everything queued, runs it inside
``BEGIN IMMEDIATE … COMMIT`` on the writer connection's thread (each function
in its own savepoint, so one failing write does not undo the others), and only
then resolves each writer's future. No write is acknowledged before the commit
that holds it has returned.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from chatkeep.errors import ChatkeepError, StorageError
from chatkeep.storage.sqlite_thread import ThreadedConnection

T = TypeVar("T")
WriteFn = Callable[[sqlite3.Connection], Any]


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
        self._closing = False
        self.commits = 0
        self.writes = 0
        #: Called with (seconds, writes) after each commit; metrics hook in here.
        self.observer: Callable[[float, int], None] | None = None

    def start(self) -> None:
        """Start the committing task."""
        self._task = asyncio.create_task(self._run(), name="sqlite-group-commit")

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in a transaction; return its result once that transaction committed."""
        if self._closing or self._task is None:
            raise StorageError("storage is closed")
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
            if self._closing:
                return

    async def _commit(self, batch: list[_Write]) -> None:
        started = time.perf_counter()
        try:
            outcomes = await self._connection.run(lambda conn: _run_batch(conn, batch))
        except sqlite3.Error as exc:
            error = StorageError(f"commit failed: {exc}")
            for write in batch:
                if not write.future.done():
                    write.future.set_exception(error)
            return
        except BaseException as exc:
            for write in batch:
                if not write.future.done():
                    write.future.set_exception(StorageError(f"commit failed: {exc!r}"))
            raise
        self.commits += 1
        self.writes += len(batch)
        if self.observer is not None:
            self.observer(time.perf_counter() - started, len(batch))
        for write, (ok, value) in zip(batch, outcomes, strict=True):
            if write.future.done():  # the writer was cancelled; the write stands
                continue
            if ok:
                write.future.set_result(value)
            else:
                write.future.set_exception(value)

    async def close(self) -> None:
        """Commit what is queued, then stop. Safe to call twice."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            task, self._task = self._task, None
            await task


def _run_batch(conn: sqlite3.Connection, batch: list[_Write]) -> list[tuple[bool, Any]]:
    """Runs on the writer thread: one transaction, one savepoint per write."""
    outcomes: list[tuple[bool, Any]] = []
    conn.execute("BEGIN IMMEDIATE")
    try:
        for write in batch:
            conn.execute("SAVEPOINT write")
            try:
                outcomes.append((True, write.fn(conn)))
            except (ChatkeepError, sqlite3.IntegrityError, ValueError) as exc:
                conn.execute("ROLLBACK TO write")
                error = exc if isinstance(exc, ChatkeepError) else StorageError(str(exc))
                outcomes.append((False, error))
            conn.execute("RELEASE write")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return outcomes
