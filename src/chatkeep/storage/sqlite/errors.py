"""Driver errors become chatkeep's errors here, and nowhere else.

Every read, every write (inside the group commit) and the opening of the database
pass what they raise through `translate`; `driver_errors` is the same as a block::

    raised inside a read or a write          answered as
    ───────────────────────────────────────  ─────────────────────────────────────
    ChatkeepError (NotFound, Conflict, …)    itself: the store raised it on purpose
    sqlite3.Error (locked, I/O, corrupt, …)  StorageError, naming what failed
    OverflowError (an int beyond 64 bits)    StorageError: SQLite cannot bind it
    ValueError (e.g. a lone surrogate)       StorageError: the codec refused it
    any other Exception (a bug in a write)   StorageError, naming the exception type

The last row is what keeps the writer alive: a write that raises something nobody
foresaw is answered to its writer alone, like any other failed write.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from chatkeep.errors import ChatkeepError, StorageError

#: The exceptions the sqlite3 driver raises for what it was given or what it found.
DRIVER_ERRORS = (sqlite3.Error, OverflowError, ValueError)


def translate(exc: Exception, doing: str) -> ChatkeepError:
    """The chatkeep error that stands for ``exc``, raised while ``doing`` (e.g. "write")."""
    if isinstance(exc, ChatkeepError):
        return exc
    if isinstance(exc, DRIVER_ERRORS):
        return StorageError(f"{doing} failed: {exc}")
    return StorageError(f"{doing} failed: {type(exc).__name__}: {exc}")


@contextmanager
def driver_errors(doing: str) -> Iterator[None]:
    """Raise the driver errors of the block as `StorageError`s (see the table above)."""
    try:
        yield
    except ChatkeepError:
        raise
    except DRIVER_ERRORS as exc:
        raise translate(exc, doing) from exc
