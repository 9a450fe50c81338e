"""API keys in SQLite (the `KeyStore` part of the store).

One table, ``api_keys`` (migration 3): a key's limits in columns, its models as a JSON
array (``NULL``: every model), and the SHA-256 of its secret under a unique index, which
is what `find_api_key` looks up. Reads run on a reader connection, writes in the group
commit: a created or revoked key is durable before the call returns.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

from chatkeep.domain.keys import ApiKey, KeyLimits
from chatkeep.domain.records import Page
from chatkeep.errors import Conflict, NotFound
from chatkeep.storage.base import decode_cursor, encode_cursor
from chatkeep.storage.key_store import too_many_keys

if TYPE_CHECKING:
    from chatkeep.storage.sqlite.group_commit import GroupCommitter

T = TypeVar("T")

KEY_COLUMNS = (
    "id, owner_id, label, rate, burst, max_streams, priority, models, created_by, "
    "created_at, revoked_at"
)


def key_from_row(row: sqlite3.Row | tuple[Any, ...]) -> ApiKey:
    """An `ApiKey` from a row selected with `KEY_COLUMNS`."""
    models = tuple(orjson.loads(row[7])) if row[7] is not None else None
    return ApiKey(
        id=row[0],
        owner_id=row[1],
        label=row[2],
        limits=KeyLimits(
            rate=row[3], burst=row[4], max_streams=row[5], priority=row[6], models=models
        ),
        created_by=row[8],
        created_at=row[9],
        revoked_at=row[10],
    )


def insert_key(
    conn: sqlite3.Connection, key: ApiKey, secret_hash: str, max_active: int | None = None
) -> None:
    """Store a new key; an id or hash stored already, or an owner at ``max_active``: `Conflict`."""
    if max_active is not None:
        (active,) = conn.execute(
            "SELECT count(*) FROM api_keys WHERE owner_id = ? AND revoked_at IS NULL",
            (key.owner_id,),
        ).fetchone()
        if active >= max_active:
            raise too_many_keys(key.owner_id, max_active)
    limits = key.limits
    models = orjson.dumps(list(limits.models)).decode() if limits.models is not None else None
    try:
        conn.execute(
            f"INSERT INTO api_keys ({KEY_COLUMNS}, secret_hash) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                key.id,
                key.owner_id,
                key.label,
                limits.rate,
                limits.burst,
                limits.max_streams,
                limits.priority,
                models,
                key.created_by,
                key.created_at,
                key.revoked_at,
                secret_hash,
            ),
        )
    except sqlite3.IntegrityError as exc:
        raise Conflict(f"key {key.id} (or its secret) is already stored") from exc


def select_key_by_hash(conn: sqlite3.Connection, secret_hash: str) -> ApiKey | None:
    row = conn.execute(
        f"SELECT {KEY_COLUMNS} FROM api_keys WHERE secret_hash = ?", (secret_hash,)
    ).fetchone()
    return key_from_row(row) if row is not None else None


def select_keys(
    conn: sqlite3.Connection, owner_id: str | None, *, after: list[Any] | None, limit: int
) -> list[Any]:
    """Up to ``limit`` key rows, newest first, of ``owner_id`` (``None``: every owner's).

    ``after`` is the ``(created_at, id)`` of the last row of the previous page. Each form
    has its index (``api_keys_by_owner``, ``api_keys_newest``).
    """
    where: list[str] = []
    params: list[Any] = []
    if owner_id is not None:
        where.append("owner_id = ?")
        params.append(owner_id)
    if after is not None:
        where.append("(created_at, id) < (?, ?)")
        params.extend(after)
    params.append(limit)
    condition = f"WHERE {' AND '.join(where)} " if where else ""
    return conn.execute(
        f"SELECT {KEY_COLUMNS} FROM api_keys {condition}ORDER BY created_at DESC, id DESC LIMIT ?",
        params,
    ).fetchall()


def revoke_key_row(
    conn: sqlite3.Connection, key_id: str, owner_id: str | None, now: float
) -> ApiKey:
    """Set ``revoked_at`` unless already set; the key as it is now, or `NotFound`."""
    if owner_id is None:
        row = conn.execute(f"SELECT {KEY_COLUMNS} FROM api_keys WHERE id = ?", (key_id,)).fetchone()
    else:
        row = conn.execute(
            f"SELECT {KEY_COLUMNS} FROM api_keys WHERE id = ? AND owner_id = ?",
            (key_id, owner_id),
        ).fetchone()
    if row is None:
        raise NotFound(f"key {key_id} not found")
    key = key_from_row(row)
    if key.revoked_at is not None:
        return key
    conn.execute("UPDATE api_keys SET revoked_at = ? WHERE id = ?", (now, key_id))
    return replace(key, revoked_at=now)


class SQLiteKeys:
    """Mixed into `SQLiteStore`: the API-key table."""

    # Provided by `SQLiteStore`.
    _committer: GroupCommitter
    _clock: Callable[[], float]

    if TYPE_CHECKING:

        async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...

    async def create_api_key(
        self, key: ApiKey, *, secret_hash: str, max_active: int | None = None
    ) -> None:
        await self._committer.write(lambda conn: insert_key(conn, key, secret_hash, max_active))

    async def find_api_key(self, secret_hash: str) -> ApiKey | None:
        return await self._read(lambda conn: select_key_by_hash(conn, secret_hash))

    async def list_api_keys(
        self, owner_id: str | None, *, limit: int, cursor: str | None
    ) -> Page[ApiKey]:
        after = decode_cursor(cursor, float, str) if cursor is not None else None
        rows = await self._read(
            lambda conn: select_keys(conn, owner_id, after=after, limit=limit + 1)
        )
        items = [key_from_row(row) for row in rows[:limit]]
        next_cursor = None
        if len(rows) > limit:
            next_cursor = encode_cursor(items[-1].created_at, items[-1].id)
        return Page(items, next_cursor)

    async def revoke_api_key(self, key_id: str, *, owner_id: str | None) -> ApiKey:
        def revoke(conn: sqlite3.Connection) -> ApiKey:
            return revoke_key_row(conn, key_id, owner_id, self._clock())

        key: ApiKey = await self._committer.write(revoke)
        return key
