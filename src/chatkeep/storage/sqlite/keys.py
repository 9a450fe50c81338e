"""API keys in SQLite (the `KeyStore` part of the store).

One table, ``api_keys`` (migrations 3 and 5): a key's limits in columns, its models as a
JSON array (``NULL``: every model), its family (the root's id and limits, ``NULL`` for a
root), and the SHA-256 of its secret under a unique index, which is what `find_api_key`
looks up. A key's subtree (the keys made from it, at any depth) is a recursive query over
``created_by`` (indexed). Reads run on a reader connection, writes in the group commit: a
created or revoked key is durable before the call returns.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

from chatkeep.domain.keys import ADMIN_CREATOR, ApiKey, FamilyBudget, KeyLimits
from chatkeep.domain.records import Page
from chatkeep.errors import Conflict, NotFound
from chatkeep.storage.base import decode_cursor, encode_cursor
from chatkeep.storage.key_store import RevokedKeys, maker_revoked, too_many_keys

if TYPE_CHECKING:
    from chatkeep.storage.sqlite.group_commit import GroupCommitter

T = TypeVar("T")

KEY_COLUMNS = (
    "id, owner_id, label, rate, burst, max_streams, priority, models, created_by, "
    "created_at, revoked_at, family_id, family_rate, family_burst, family_max_streams"
)

#: The key ``:root`` (of ``:owner``, unless that is NULL) and every key made from it, at
#: any depth, as the table ``subtree (id)``. UNION, not UNION ALL: a cycle (which only a
#: hand-edited table could hold) ends the walk instead of looping.
SUBTREE = """
    WITH RECURSIVE subtree (id) AS (
        SELECT id FROM api_keys WHERE id = :root AND (:owner IS NULL OR owner_id = :owner)
        UNION
        SELECT made.id FROM api_keys AS made JOIN subtree ON made.created_by = subtree.id
        WHERE :owner IS NULL OR made.owner_id = :owner
    )
"""

#: Whether ``:within`` made ``:key`` (directly or not): a walk up its makers.
MADE_WITHIN = """
    WITH RECURSIVE makers (id) AS (
        SELECT created_by FROM api_keys WHERE id = :key
        UNION
        SELECT maker.created_by FROM api_keys AS maker JOIN makers ON maker.id = makers.id
    )
    SELECT 1 FROM makers WHERE id = :within LIMIT 1
"""


def key_from_row(row: sqlite3.Row | tuple[Any, ...]) -> ApiKey:
    """An `ApiKey` from a row selected with `KEY_COLUMNS`."""
    models = tuple(orjson.loads(row[7])) if row[7] is not None else None
    family = FamilyBudget(row[12], row[13], row[14]) if row[11] is not None else None
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
        family_id=row[11],
        family_budget=family,
    )


def insert_key(
    conn: sqlite3.Connection, key: ApiKey, secret_hash: str, max_active: int | None = None
) -> None:
    """Store a new key; an id or hash stored already, or an owner at ``max_active``: `Conflict`.

    A key made by a key that is revoked (or not its owner's) is `Forbidden`: read in this
    transaction, so a revoke that commits first is seen.
    """
    if key.created_by != ADMIN_CREATOR:
        maker = conn.execute(
            "SELECT revoked_at FROM api_keys WHERE id = ? AND owner_id = ?",
            (key.created_by, key.owner_id),
        ).fetchone()
        if maker is None or maker[0] is not None:
            raise maker_revoked(key.created_by)
    if max_active is not None:
        (active,) = conn.execute(
            "SELECT count(*) FROM api_keys WHERE owner_id = ? AND revoked_at IS NULL",
            (key.owner_id,),
        ).fetchone()
        if active >= max_active:
            raise too_many_keys(key.owner_id, max_active)
    limits, family = key.limits, key.family_budget
    models = orjson.dumps(list(limits.models)).decode() if limits.models is not None else None
    try:
        conn.execute(
            f"INSERT INTO api_keys ({KEY_COLUMNS}, secret_hash) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                key.family_id,
                family.rate if family is not None else None,
                family.burst if family is not None else None,
                family.max_streams if family is not None else None,
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
    conn: sqlite3.Connection,
    owner_id: str | None,
    *,
    after: list[Any] | None,
    limit: int,
    within: str | None = None,
) -> list[Any]:
    """Up to ``limit`` key rows, newest first, of ``owner_id`` (``None``: every owner's).

    ``after`` is the ``(created_at, id)`` of the last row of the previous page. Each form
    has its index (``api_keys_by_owner``, ``api_keys_newest``). With ``within``, only
    that key's subtree (`SUBTREE`, walked again for each page: a subtree is as large as
    the keys its owner made from one key, which ``max_keys_per_owner`` bounds while they
    are active).
    """
    where: list[str] = []
    params: dict[str, Any] = {"limit": limit}
    prefix = ""
    if within is not None:
        prefix = SUBTREE
        where.append("id IN subtree")
        params.update(root=within, owner=owner_id)
    if owner_id is not None:
        where.append("owner_id = :owner")
        params["owner"] = owner_id
    if after is not None:
        where.append("(created_at, id) < (:after_at, :after_id)")
        params.update(after_at=after[0], after_id=after[1])
    condition = f"WHERE {' AND '.join(where)} " if where else ""
    return conn.execute(
        f"{prefix}SELECT {KEY_COLUMNS} FROM api_keys {condition}"
        "ORDER BY created_at DESC, id DESC LIMIT :limit",
        params,
    ).fetchall()


def revoke_key_rows(
    conn: sqlite3.Connection, key_id: str, owner_id: str | None, within: str | None, now: float
) -> RevokedKeys:
    """Set ``revoked_at`` on the key and its subtree where unset; or `NotFound`."""
    if owner_id is None:
        row = conn.execute(f"SELECT {KEY_COLUMNS} FROM api_keys WHERE id = ?", (key_id,)).fetchone()
    else:
        row = conn.execute(
            f"SELECT {KEY_COLUMNS} FROM api_keys WHERE id = ? AND owner_id = ?",
            (key_id, owner_id),
        ).fetchone()
    if row is None or (
        within is not None
        and within != key_id
        and conn.execute(MADE_WITHIN, {"key": key_id, "within": within}).fetchone() is None
    ):
        raise NotFound(f"key {key_id} not found")
    key = key_from_row(row)
    subtree = {"root": key_id, "owner": owner_id}
    ids = [found for (found,) in conn.execute(f"{SUBTREE}SELECT id FROM subtree", subtree)]
    conn.execute(
        f"{SUBTREE}UPDATE api_keys SET revoked_at = :now "
        "WHERE revoked_at IS NULL AND id IN subtree",
        {**subtree, "now": now},
    )
    if key.revoked_at is None:
        key = replace(key, revoked_at=now)
    return RevokedKeys(key, (key_id, *(found for found in ids if found != key_id)))


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
        self, owner_id: str | None, *, limit: int, cursor: str | None, within: str | None = None
    ) -> Page[ApiKey]:
        after = decode_cursor(cursor, float, str) if cursor is not None else None
        rows = await self._read(
            lambda conn: select_keys(conn, owner_id, after=after, limit=limit + 1, within=within)
        )
        items = [key_from_row(row) for row in rows[:limit]]
        next_cursor = None
        if len(rows) > limit:
            next_cursor = encode_cursor(items[-1].created_at, items[-1].id)
        return Page(items, next_cursor)

    async def revoke_api_key(
        self, key_id: str, *, owner_id: str | None, within: str | None = None
    ) -> RevokedKeys:
        def revoke(conn: sqlite3.Connection) -> RevokedKeys:
            return revoke_key_rows(conn, key_id, owner_id, within, self._clock())

        revoked: RevokedKeys = await self._committer.write(revoke)
        return revoked
