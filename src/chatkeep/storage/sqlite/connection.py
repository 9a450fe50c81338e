"""A SQLite connection owned by one thread, driven from the event loop.

The event loop never touches the connection: every call ships a function to the
connection's own thread and awaits its result. Unlike a thread hop per SQL
statement, a whole function (a batch of statements, a group commit) runs in one
hop, which is what makes group commit cheap.
"""

from __future__ import annotations

import asyncio
import sqlite3
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


class ThreadedConnection:
    """One `sqlite3.Connection` and the single thread allowed to use it."""

    def __init__(self, path: Path | str, *, name: str, pragmas: list[str]) -> None:
        self._path = str(path)
        self._pragmas = pragmas
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._connection: sqlite3.Connection | None = None
        self._closed = False

    async def connect(self) -> None:
        """Open the connection on its thread and apply the pragmas."""
        await self._submit(self._connect)

    def _connect(self) -> None:
        # isolation_level=None: transactions are begun and committed explicitly.
        connection = sqlite3.connect(self._path, isolation_level=None, check_same_thread=True)
        for pragma in self._pragmas:
            connection.execute(pragma)
        self._connection = connection

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` on the connection's thread."""
        if self._closed:
            raise RuntimeError("connection is closed")
        return await self._submit(lambda: fn(self._require()))

    def _require(self) -> sqlite3.Connection:
        if self._connection is None:
            raise RuntimeError("connection is not open; call connect() first")
        return self._connection

    async def _submit(self, fn: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn)

    async def close(self) -> None:
        """Close the connection and stop its thread. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._connection is not None:
            connection, self._connection = self._connection, None
            await asyncio.get_running_loop().run_in_executor(self._executor, connection.close)
        self._executor.shutdown(wait=False)

    def __del__(self) -> None:
        if not self._closed:
            warnings.warn(
                f"ThreadedConnection to {self._path!r} was never closed",
                ResourceWarning,
                stacklevel=1,
            )
            self._executor.shutdown(wait=False)
