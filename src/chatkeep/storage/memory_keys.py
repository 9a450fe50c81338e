"""API keys in memory (the `KeyStore` part of `MemoryStore`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cached_property

from chatkeep.domain.keys import ADMIN_CREATOR, ApiKey
from chatkeep.domain.records import Page
from chatkeep.errors import Conflict, NotFound
from chatkeep.storage.base import decode_cursor, encode_cursor
from chatkeep.storage.key_store import RevokedKeys, maker_revoked, too_many_keys


@dataclass(slots=True)
class _KeyTable:
    by_id: dict[str, ApiKey] = field(default_factory=dict)
    id_by_hash: dict[str, str] = field(default_factory=dict)
    #: Maker id → ids of the keys it made (the admin's are not kept: never walked).
    made_by: dict[str, list[str]] = field(default_factory=dict)

    def subtree(self, root: str) -> list[str]:
        """``root`` and every key made from it, at any depth, ``root`` first."""
        found, seen = [root], {root}
        for key_id in found:  # grows as it goes: a breadth-first walk
            for made in self.made_by.get(key_id, ()):
                if made not in seen:
                    seen.add(made)
                    found.append(made)
        return found

    def made_within(self, key_id: str, within: str) -> bool:
        """Whether ``key_id`` is ``within`` or was made from it (a walk up its makers)."""
        seen: set[str] = set()
        current: str | None = key_id
        while current is not None and current not in seen:
            if current == within:
                return True
            seen.add(current)
            key = self.by_id.get(current)
            current = key.created_by if key is not None else None
        return False


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
        if key.created_by != ADMIN_CREATOR:
            maker = table.by_id.get(key.created_by)
            if maker is None or maker.revoked or maker.owner_id != key.owner_id:
                raise maker_revoked(key.created_by)
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
        if key.created_by != ADMIN_CREATOR:
            table.made_by.setdefault(key.created_by, []).append(key.id)

    async def find_api_key(self, secret_hash: str) -> ApiKey | None:
        table = self._key_table
        key_id = table.id_by_hash.get(secret_hash)
        return table.by_id[key_id] if key_id is not None else None

    async def list_api_keys(
        self, owner_id: str | None, *, limit: int, cursor: str | None, within: str | None = None
    ) -> Page[ApiKey]:
        table = self._key_table
        after = tuple(decode_cursor(cursor, float, str)) if cursor is not None else None
        if within is None:
            candidates = list(table.by_id.values())
        elif within in table.by_id:
            candidates = [table.by_id[key_id] for key_id in table.subtree(within)]
        else:
            candidates = []
        matching = sorted(
            (
                key
                for key in candidates
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

    async def revoke_api_key(
        self, key_id: str, *, owner_id: str | None, within: str | None = None
    ) -> RevokedKeys:
        table = self._key_table
        key = table.by_id.get(key_id)
        if (
            key is None
            or (owner_id is not None and key.owner_id != owner_id)
            or (within is not None and not table.made_within(key_id, within))
        ):
            raise NotFound(f"key {key_id} not found")
        now = self._clock()
        ids = table.subtree(key_id)
        for each in ids:
            made = table.by_id[each]
            if made.revoked_at is None:
                table.by_id[each] = replace(made, revoked_at=now)
        return RevokedKeys(table.by_id[key_id], tuple(ids))
