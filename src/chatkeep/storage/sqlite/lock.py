"""The exclusive lock on a data directory: one chatkeep process per directory.

Two servers on one directory would each take the other's open replies for a crash's
leftovers and close them as ``incomplete`` at startup. So the store takes this lock
before it opens the database, and recovery runs only under it.

The lock is ``fcntl.flock`` on a file that holds the PID of its holder. The kernel
releases it when the holder exits, ``kill -9`` included, so a stale lock file never
blocks a restart; the PID in it is only read to name the holder in the error.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from chatkeep.errors import DataDirLocked, StorageError

LOCK_FILE = "chatkeep.lock"


class DataDirLock:
    """``acquire`` takes the lock or raises `DataDirLocked`; ``release`` is safe twice."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Lock the directory for this process, writing its PID into the lock file."""
        if self._fd is not None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise StorageError(f"cannot create the lock {self.path}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            raise DataDirLocked(
                f"the data directory {self.path.parent} is in use: its lock {self.path} "
                f"is held by process {holder}. Stop that chatkeep first, or give this one "
                "another data directory (--data-dir / CHATKEEP_DATA_DIR)."
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Unlock. The file stays: deleting it would race with a process about to lock it."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)


def probe(directory: Path) -> None:
    """Raise `DataDirLocked` if another process holds ``directory``'s lock; hold nothing."""
    lock = DataDirLock(directory)
    lock.acquire()
    lock.release()


def _read_pid(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        text = ""
    return text if text.isdigit() else "unknown (no PID in the lock file)"
