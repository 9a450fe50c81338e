"""The part of the `Store` contract that keeps API keys.

Keys are looked up by the hash of their secret (the one lookup not scoped by owner: it is
how the owner is found); every other call names the owner whose keys it lists or revokes
(``None``: the admin, who sees every owner's).
"""

from __future__ import annotations

import abc

from chatkeep.domain.keys import ApiKey
from chatkeep.domain.records import Page
from chatkeep.errors import Conflict


def too_many_keys(owner_id: str, max_active: int) -> Conflict:
    """The refusal of one key more than an owner may hold."""
    return Conflict(
        f"owner {owner_id} already has {max_active} active keys, the most allowed "
        "(CHATKEEP_AUTH_MAX_KEYS_PER_OWNER); revoke one first"
    )


class KeyStore(abc.ABC):
    """Durable API keys: stored hashed, listed without secrets, revoked, never deleted."""

    @abc.abstractmethod
    async def create_api_key(
        self, key: ApiKey, *, secret_hash: str, max_active: int | None = None
    ) -> None:
        """Store ``key`` with the hash of its secret (committed before it returns).

        `Conflict` when its id or its hash is already stored, or (with ``max_active``) when
        its owner already has that many unrevoked keys, counted in the same transaction.
        """

    @abc.abstractmethod
    async def find_api_key(self, secret_hash: str) -> ApiKey | None:
        """The key whose secret hashes to ``secret_hash`` (revoked ones included), or ``None``."""

    @abc.abstractmethod
    async def list_api_keys(
        self, owner_id: str | None, *, limit: int, cursor: str | None
    ) -> Page[ApiKey]:
        """Keys newest first, ``limit`` at a time: ``owner_id``'s, or every owner's (``None``)."""

    @abc.abstractmethod
    async def revoke_api_key(self, key_id: str, *, owner_id: str | None) -> ApiKey:
        """Mark the key revoked (once; a second revoke keeps the first time) and return it.

        `NotFound` when no such key belongs to ``owner_id`` (``None``: any owner).
        """
