"""SQLite's own heap, reported to the memory governor like any other bounded structure.

Every SQLite connection keeps a page cache bounded by ``PRAGMA cache_size`` (2 MB by
default), plus its schema and prepared statements. That memory is malloc'd inside the
library, where neither the caches' estimates nor ``tracemalloc`` see it, and it fills as
the database grows: on a fresh data directory the create-and-send workload took it from
0.4 to 2.4 MB over the first 3 000 requests, then it stayed flat. Left out of the accounted
bytes, that filling reads as a leak of ~700 bytes per request at the first checkpoint.

``sqlite3_memory_used()`` counts all of it, for every connection in the process, and is
thread-safe. Python's ``sqlite3`` module does not expose it, so it is read through ctypes
from the library ``_sqlite3`` is linked against; where that fails (a static build that does
not export the symbol), `load_sqlite_heap` answers ``None`` and nothing is registered.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

#: ``sqlite3_release_memory`` takes a C ``int``.
_MAX_C_INT = 2**31 - 1


class SQLiteHeap:
    """The process's SQLite heap as a `Reclaimable`: what it holds, and what it can give back."""

    name = "sqlite"

    def __init__(self, memory_used: Callable[[], int], release: Callable[[int], int]) -> None:
        self._memory_used = memory_used
        self._release = release

    def nbytes(self) -> int:
        """Bytes SQLite has allocated and not freed (page caches, schemas, statements)."""
        return int(self._memory_used())

    def reclaim(self, fraction: float) -> int:
        """Ask SQLite to free that share of its heap; it frees only unused cache pages.

        ``sqlite3_release_memory`` does nothing (answers 0) unless the library was built
        with ``SQLITE_ENABLE_MEMORY_MANAGEMENT``; the page caches stay within their bound
        either way.
        """
        wanted = min(int(self.nbytes() * fraction), _MAX_C_INT)
        return max(0, int(self._release(wanted))) if wanted > 0 else 0


def load_sqlite_heap(*, load: Callable[[str], Any] = ctypes.CDLL) -> SQLiteHeap | None:
    """The SQLite heap of this process, or ``None`` where its counters cannot be read."""
    try:
        import _sqlite3

        library = load(_sqlite3.__file__)
        memory_used = library.sqlite3_memory_used
        release = library.sqlite3_release_memory
    except (ImportError, OSError, AttributeError):
        logger.debug("SQLite's memory counters are not available", exc_info=True)
        return None
    memory_used.argtypes = []
    memory_used.restype = ctypes.c_int64
    release.argtypes = [ctypes.c_int]
    release.restype = ctypes.c_int
    return SQLiteHeap(memory_used, release)
