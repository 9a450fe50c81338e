"""API keys in SQLite (the `KeyStore` part of the store)."""

from __future__ import annotations

from chatkeep.domain.keys import ApiKey
from chatkeep.domain.records import Page


class SQLiteKeys:
    """Mixed into `SQLiteStore`: the API-key table."""

    # Placeholders until the key table is written; replaced by the real methods.
    async def create_api_key(self, key: ApiKey, *, secret_hash: str) -> None:
        raise NotImplementedError

    async def find_api_key(self, secret_hash: str) -> ApiKey | None:
        raise NotImplementedError

    async def list_api_keys(
        self, owner_id: str | None, *, limit: int, cursor: str | None
    ) -> Page[ApiKey]:
        raise NotImplementedError

    async def revoke_api_key(self, key_id: str, *, owner_id: str | None) -> ApiKey:
        raise NotImplementedError
