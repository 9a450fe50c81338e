"""The part of the `Store` contract that keeps API keys.

Keys are looked up by the hash of their secret (the one lookup not scoped by owner: it is
how the owner is found); every other call names the owner whose keys it lists or revokes
(``None``: the admin, who sees every owner's).

Keys form trees: a key made by a key names its maker (``created_by``). A key acting for
itself sees only its own subtree (``within``: the key and the keys made from it, at any
depth), and a revoke takes the whole subtree with it, in one transaction: a key made
from a revoked key never outlives it.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

from chatkeep.domain.keys import ApiKey
from chatkeep.domain.records import Page
from chatkeep.errors import Conflict, Forbidden


@dataclass(frozen=True, slots=True)
class RevokedKeys:
    """What a revoke did: the key asked for, as it is now, and every key it took along."""

    key: ApiKey
    #: The key's id and those of every key made from it at any depth: all revoked now
    #: (by this revoke, or already before it).
    ids: tuple[str, ...]


def too_many_keys(owner_id: str, max_active: int) -> Conflict:
    """The refusal of one key more than an owner may hold."""
    return Conflict(
        f"owner {owner_id} already has {max_active} active keys, the most allowed "
        "(CHATKEEP_AUTH_MAX_KEYS_PER_OWNER); revoke one first"
    )


def maker_revoked(maker_id: str) -> Forbidden:
    """The refusal of a key whose maker is revoked (or gone) by the time it is stored."""
    return Forbidden(f"key {maker_id} is revoked")


class KeyStore(abc.ABC):
    """Durable API keys: stored hashed, listed without secrets, revoked, never deleted."""

    @abc.abstractmethod
    async def create_api_key(
        self, key: ApiKey, *, secret_hash: str, max_active: int | None = None
    ) -> None:
        """Store ``key`` with the hash of its secret (committed before it returns).

        `Conflict` when its id or its hash is already stored, or (with ``max_active``) when
        its owner already has that many unrevoked keys, counted in the same transaction.
        `Forbidden` when it was made by a key that is revoked, or not stored, checked in
        the same transaction (a key made while its maker is being revoked).
        """

    @abc.abstractmethod
    async def find_api_key(self, secret_hash: str) -> ApiKey | None:
        """The key whose secret hashes to ``secret_hash`` (revoked ones included), or ``None``."""

    @abc.abstractmethod
    async def list_api_keys(
        self, owner_id: str | None, *, limit: int, cursor: str | None, within: str | None = None
    ) -> Page[ApiKey]:
        """Keys newest first, ``limit`` at a time: ``owner_id``'s, or every owner's (``None``).

        With ``within``, only that key and the keys made from it, at any depth.
        """

    @abc.abstractmethod
    async def revoke_api_key(
        self, key_id: str, *, owner_id: str | None, within: str | None = None
    ) -> RevokedKeys:
        """Revoke the key and every key made from it, at any depth, in one transaction.

        Each is marked once: one revoked before keeps its time. `NotFound` when no such
        key belongs to ``owner_id`` (``None``: any owner) or, with ``within``, when it is
        not that key or one made from it.
        """
