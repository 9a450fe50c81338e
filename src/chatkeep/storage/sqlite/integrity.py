"""Is the database file sound? ``quick_check`` at every start, ``integrity_check`` on demand.

``PRAGMA quick_check`` reads every page and verifies the b-tree structure in time
linear in the file's size; ``integrity_check`` also verifies that every index
matches its table, which is slower, so it is left to ``chatkeep check``. A damaged
database must stop the server at startup: one that starts reports ready and then
fails a share of the reads for as long as it runs.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from chatkeep.errors import DatabaseDamaged

#: At most this many findings are quoted; a badly damaged file can have thousands.
MAX_FINDINGS = 20


def check(conn: sqlite3.Connection, *, full: bool = False) -> list[str]:
    """What is wrong with the database (an empty list when it is sound).

    A file too damaged for the check to run at all reports the driver's error as its
    finding.
    """
    pragma = "integrity_check" if full else "quick_check"
    try:
        rows = conn.execute(f"PRAGMA {pragma}({MAX_FINDINGS})").fetchall()
    except sqlite3.DatabaseError as exc:
        if not is_damage(exc):
            raise
        return [str(exc)]
    findings = [str(row[0]) for row in rows]
    return [] if findings == ["ok"] else findings


def is_damage(exc: sqlite3.Error) -> bool:
    """Whether the driver's error says the file itself is broken (not busy, not missing)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


def damaged(path: Path, findings: list[str]) -> DatabaseDamaged:
    """The error that refuses to start on a damaged database, saying what to do."""
    return DatabaseDamaged(
        f"the database {path} is damaged ({'; '.join(findings)}); chatkeep will not start "
        f"on it. Stop here and restore {path.name} from a backup; "
        f"`chatkeep check --data-dir {path.parent}` lists every problem, and the sqlite3 "
        "shell's `.recover` command copies out what can still be read."
    )


def check_file(path: Path) -> list[str]:
    """Run the full check on the database at ``path``, read-only and without the lock.

    Safe next to a running server: in WAL mode a reader never blocks the writer.
    """
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return check(conn, full=True)
    finally:
        conn.close()
