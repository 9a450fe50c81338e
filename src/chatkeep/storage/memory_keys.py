"""API keys in memory (the `KeyStore` part of `MemoryStore`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cached_property

from chatkeep.domain.keys import ApiKey
from chatkeep.domain.records import Page
from chatkeep.errors import Conflict, NotFound
from chatkeep.storage.base import decode_cursor, encode_cursor
from chatkeep.storage.key_store import too_many_keys


@dataclass(slots=True)
class _KeyTable:
    by_id: dict[str, ApiKey] = field(default_factory=dict)
    id_by_hash: dict[str, str] = field(default_factory=dict)


class MemoryKeys:
    """Mixed into `MemoryStore`: API keys in a dict (records are frozen: shared, not copied)."""

    # Provided by `MemoryStore`.
    _clock: Callable[[], float]

    @cached_property
    def _key_table(self) -> _KeyTable:
        # Made on first use: `MemoryStore.__init__` does not know about its mixins.
        return _KeyTable()

    async def create_api_key(
        self, key: ApiKey, *, secret_hash: str, max_active: int | None = None
    ) -> None:
        table = self._key_table
        if key.id in table.by_id or secret_hash in table.id_by_hash:
            raise Conflict(f"key {key.id} (or its secret) is already stored")
        if max_active is not None:
            active = sum(
                1 for k in table.by_id.values() if k.owner_id == key.owner_id and not k.revoked
            )
            if active >= max_active:
                raise too_many_keys(key.owner_id, max_active)
        table.by_id[key.id] = key
        table.id_by_hash[secret_hash] = key.id

    async def find_api_key(self, secret_hash: str) -> ApiKey | None:
        table = self._key_table
        key_id = table.id_by_hash.get(secret_hash)
        return table.by_id[key_id] if key_id is not None else None

    async def list_api_keys(
        self, owner_id: str | None, *, limit: int, cursor: str | None
    ) -> Page[ApiKey]:
        after = tuple(decode_cursor(cursor, float, str)) if cursor is not None else None
        matching = sorted(
            (
                key
                for key in self._key_table.by_id.values()
                if (owner_id is None or key.owner_id == owner_id)
                and (after is None or (key.created_at, key.id) < after)
            ),
            key=lambda key: (key.created_at, key.id),
            reverse=True,
        )
        items = matching[:limit]
        next_cursor = None
        if len(matching) > limit:
            next_cursor = encode_cursor(items[-1].created_at, items[-1].id)
        return Page(items, next_cursor)

    async def revoke_api_key(self, key_id: str, *, owner_id: str | None) -> ApiKey:
        table = self._key_table
        key = table.by_id.get(key_id)
        if key is None or (owner_id is not None and key.owner_id != owner_id):
            raise NotFound(f"key {key_id} not found")
        if key.revoked_at is None:
            key = table.by_id[key_id] = replace(key, revoked_at=self._clock())
        return key
