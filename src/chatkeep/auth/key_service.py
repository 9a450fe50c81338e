"""Creating, listing and revoking API keys: one path for the HTTP routes and the CLI.

The rules live here, not in the callers: a new key's limits go through `grants.grant`
(never more than its creator has), its models must be configured ones, its secret is
made here, shown once (`IssuedKey`) and stored only as its hash. A key made by a key
joins its creator's family (`ApiKey.family_of_its_keys`): the family's keys share their
root's budget. A key acting for itself (``acting``) sees and revokes only itself and the
keys made from it; a revoke takes every key made from the revoked one along, and reaches
the key cache of this process at once (`KeyCache.forget`, for each); other processes see
it within their cache's seconds.

Only keys count against ``max_keys_per_owner``: it bounds what a leaked key can mint, and
the admin (the admin token, ``chatkeep keys``) must still be able to make a key for an
owner whose keys filled it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from chatkeep.auth.grants import ModelChoice, grant, model_names
from chatkeep.auth.key_cache import KeyCache
from chatkeep.auth.secrets import hash_secret, new_secret
from chatkeep.domain.keys import ADMIN_CREATOR, ApiKey
from chatkeep.domain.records import Page
from chatkeep.domain.validation import InvalidValue, check_text
from chatkeep.errors import InvalidRequest, UnknownModel
from chatkeep.serialize import timestamp
from chatkeep.settings import AccessSettings
from chatkeep.storage.base import new_id
from chatkeep.storage.key_store import KeyStore, RevokedKeys

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
        for more than it has, `Conflict` when a key would pass its owner's bound of keys.
        """
        _check_label(label)
        self._check_models(models, creator)
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
        family_id, family_budget = (
            creator.family_of_its_keys() if creator is not None else (None, None)
        )
        secret = new_secret()
        key = ApiKey(
            id=self._new_id("key"),
            owner_id=owner,
            label=label,
            limits=limits,
            created_at=self._clock(),
            created_by=creator.id if creator is not None else ADMIN_CREATOR,
            family_id=family_id,
            family_budget=family_budget,
        )
        await self.store.create_api_key(
            key,
            secret_hash=hash_secret(secret),
            max_active=self.defaults.max_keys_per_owner if creator is not None else None,
        )
        return IssuedKey(key, secret)

    async def list(
        self,
        owner: str | None,
        *,
        limit: int | None = None,
        cursor: str | None = None,
        acting: ApiKey | None = None,
    ) -> Page[ApiKey]:
        """``owner``'s keys (``None``: every owner's), newest first, a page at a time.

        With ``acting`` (a key listing for itself), only that key and the keys made from it.
        """
        size = min(limit or self.default_page_size, self.max_page_size)
        within = acting.id if acting is not None else None
        return await self.store.list_api_keys(owner, limit=size, cursor=cursor, within=within)

    async def revoke(
        self, key_id: str, *, owner: str | None, acting: ApiKey | None = None
    ) -> RevokedKeys:
        """Revoke ``owner``'s key ``key_id`` (``None``: any owner's), and every key made from it.

        With ``acting`` (a key revoking for itself), ``key_id`` must be that key or one
        made from it. `NotFound` otherwise, whoever holds it.
        """
        within = acting.id if acting is not None else None
        revoked = await self.store.revoke_api_key(key_id, owner_id=owner, within=within)
        if self.cache is not None:
            for each in revoked.ids:
                self.cache.forget(each)
        return revoked

    def _check_models(self, models: ModelChoice, creator: ApiKey | None) -> None:
        """The models asked for must be configured ones: `UnknownModel` (422) otherwise.

        A value, checked before rights (`grant`): a typo is 422 whoever asks; with one
        exception. A name a restricted creator may not use is left to `grant`, whose 403
        is the same whether or not that model is configured: a key cannot probe which
        models exist. For the same reason the answer lists only the configured models
        the asker may use (every one for the admin and for an unrestricted key).
        """
        names = model_names(models)
        if not isinstance(names, tuple):  # not said, or every model
            return
        own = creator.limits.models if creator is not None else None
        unknown = [
            name for name in names if name not in self.models and (own is None or name in own)
        ]
        if unknown:
            usable = sorted(name for name in self.models if own is None or name in own)
            listed = (
                f"configured: {', '.join(usable)}"
                if usable
                else "this key may use none of the configured models"
            )
            raise UnknownModel(f"models: {', '.join(unknown)} not configured ({listed})")


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
