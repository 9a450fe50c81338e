"""The read queries of the SQLite store, run on a reader connection's thread.

Every query carries the owner: listings select by it, and a query of a conversation's
messages first checks the conversation is the owner's (`require_conversation`) in the
same read, so another owner's id reads as one that does not exist.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from chatkeep.storage.sqlite.rows import CONVERSATION_COLUMNS, MESSAGE_COLUMNS
from chatkeep.storage.sqlite.statements import require_conversation

#: Past any message number (``seq``) a conversation can reach.
NO_BOUND = 2**62


def select_conversations(
    conn: sqlite3.Connection,
    owner_id: str,
    *,
    status: str | None,
    after: list[Any] | None,
    limit: int,
) -> list[Any]:
    """Up to ``limit`` conversation rows of ``owner_id``, newest first.

    ``after`` is the ``(created_at, id)`` of the last row of the previous page.
    """
    where = ["owner_id = ?"]
    params: list[Any] = [owner_id]
    if status is not None:
        where.append("status = ?")
        params.append(status)
    if after is not None:
        where.append("(created_at, id) < (?, ?)")
        params.extend(after)
    params.append(limit)
    return conn.execute(
        f"SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE {' AND '.join(where)} "
        "ORDER BY created_at DESC, id DESC LIMIT ?",
        params,
    ).fetchall()


def select_messages(
    conn: sqlite3.Connection,
    owner_id: str,
    conversation_id: str,
    *,
    after: int | None,
    before: int | None,
    limit: int,
) -> list[Any]:
    """Up to ``limit`` message rows between ``after`` and ``before``.

    In ``seq`` order, or newest first when only ``before`` is given (a page backwards).
    """
    require_conversation(conn, owner_id, conversation_id)
    where = ["conversation_id = ?"]
    params: list[Any] = [conversation_id]
    if after is not None:
        where.append("seq > ?")
        params.append(after)
    if before is not None:
        where.append("seq < ?")
        params.append(before)
    order = "DESC" if before is not None and after is None else "ASC"
    params.append(limit)
    return conn.execute(
        f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE {' AND '.join(where)} "
        f"ORDER BY seq {order} LIMIT ?",
        params,
    ).fetchall()


def select_recent(
    conn: sqlite3.Connection,
    owner_id: str,
    conversation_id: str,
    *,
    limit: int,
    before: int | None,
) -> list[Any]:
    """Up to ``limit`` message rows with ``seq < before``, newest first."""
    require_conversation(conn, owner_id, conversation_id)
    return conn.execute(
        f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ? "
        "AND seq < ? ORDER BY seq DESC LIMIT ?",
        (conversation_id, before if before is not None else NO_BOUND, limit),
    ).fetchall()
