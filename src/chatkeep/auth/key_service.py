"""Creating, listing and revoking API keys: one path for the HTTP routes and the CLI.

The rules live here, not in the callers: a new key's limits go through `grants.grant`
(never more than its creator has), its models must be configured ones, its secret is
made here, shown once (`IssuedKey`) and stored only as its hash. A revoke reaches the
key cache of this process at once (`KeyCache.forget`); other processes see it within
their cache's seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

from chatkeep.auth.grants import ModelChoice, grant
from chatkeep.auth.key_cache import KeyCache
from chatkeep.auth.secrets import hash_secret, new_secret
from chatkeep.domain.keys import ADMIN_CREATOR, ApiKey
from chatkeep.domain.records import Page
from chatkeep.domain.validation import InvalidValue, check_text
from chatkeep.errors import InvalidRequest, UnknownModel
from chatkeep.serialize import timestamp
from chatkeep.settings import AccessSettings
from chatkeep.storage.base import new_id
from chatkeep.storage.key_store import KeyStore

#: Longest label of a key.
MAX_LABEL_CHARS = 200


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A key just created, with its secret: the only time the secret exists outside a client."""

    key: ApiKey
    secret: str

    def __repr__(self) -> str:  # never in a log line or a traceback
        return f"IssuedKey(key={self.key!r}, secret='<hidden>')"


class KeyService:
    """Keys of one store, with the defaults for new keys and the configured models."""

    def __init__(
        self,
        store: KeyStore,
        *,
        defaults: AccessSettings,
        models: Collection[str],
        default_page_size: int,
        max_page_size: int,
        cache: KeyCache | None = None,
        clock: Callable[[], float] = time.time,
        new_id: Callable[[str], str] = new_id,
    ) -> None:
        self.store = store
        self.defaults = defaults
        self.models = models
        self.default_page_size = default_page_size
        self.max_page_size = max_page_size
        self.cache = cache
        self._clock = clock
        self._new_id = new_id

    async def create(
        self,
        creator: ApiKey | None,
        *,
        owner: str,
        label: str | None = None,
        rate: float | None = None,
        burst: int | None = None,
        max_streams: int | None = None,
        priority: int | None = None,
        models: ModelChoice = None,
    ) -> IssuedKey:
        """A new key of ``owner`` made by ``creator`` (``None``: the admin), stored hashed.

        `InvalidRequest` for a bad value or an unknown model, `Forbidden` when a key asks
        for more than it has.
        """
        _check_label(label)
        self._check_models(models)
        limits = grant(
            creator,
            owner=owner,
            rate=rate,
            burst=burst,
            max_streams=max_streams,
            priority=priority,
            models=models,
            defaults=self.defaults,
        )
        secret = new_secret()
        key = ApiKey(
            id=self._new_id("key"),
            owner_id=owner,
            label=label,
            limits=limits,
            created_at=self._clock(),
            created_by=creator.id if creator is not None else ADMIN_CREATOR,
        )
        await self.store.create_api_key(
            key, secret_hash=hash_secret(secret), max_active=self.defaults.max_keys_per_owner
        )
        return IssuedKey(key, secret)

    async def list(
        self, owner: str | None, *, limit: int | None = None, cursor: str | None = None
    ) -> Page[ApiKey]:
        """``owner``'s keys (``None``: every owner's), newest first, a page at a time."""
        size = min(limit or self.default_page_size, self.max_page_size)
        return await self.store.list_api_keys(owner, limit=size, cursor=cursor)

    async def revoke(self, key_id: str, *, owner: str | None) -> ApiKey:
        """Revoke ``owner``'s key ``key_id`` (``None``: any owner's); `NotFound` otherwise."""
        key = await self.store.revoke_api_key(key_id, owner_id=owner)
        if self.cache is not None:
            self.cache.forget(key.id)
        return key

    def _check_models(self, models: ModelChoice) -> None:
        # A value, checked before rights (`grants`): a typo is 422 whoever asks.
        if not isinstance(models, Sequence):  # not said, or every model
            return
        names = [models] if isinstance(models, str) else models
        unknown = [name for name in names if name not in self.models]
        if unknown:
            raise UnknownModel(
                f"models: {', '.join(unknown)} not configured "
                f"(configured: {', '.join(sorted(self.models))})"
            )


def key_dict(key: ApiKey) -> dict[str, Any]:
    """A key as the API and the CLI show it: its limits, never its secret."""
    limits = key.limits
    return {
        "id": key.id,
        "owner_id": key.owner_id,
        "label": key.label,
        "rate": limits.rate,
        "burst": limits.burst,
        "max_streams": limits.max_streams,
        "priority": limits.priority,
        "models": list(limits.models) if limits.models is not None else None,
        "created_at": timestamp(key.created_at),
        "created_by": key.created_by,
        "revoked_at": timestamp(key.revoked_at) if key.revoked_at is not None else None,
    }


def _check_label(label: str | None) -> None:
    if label is None:
        return
    if len(label) > MAX_LABEL_CHARS:
        raise InvalidRequest(f"label: at most {MAX_LABEL_CHARS} characters")
    try:
        check_text(label)
    except InvalidValue as exc:
        raise InvalidRequest(f"label: {exc}") from None
