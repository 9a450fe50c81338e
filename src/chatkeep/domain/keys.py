"""API keys as stored: who a key acts for and what it may do.

The secret itself is never stored: only its hash (`chatkeep.auth.secrets`), so a copy of
the database does not hand out working keys.
"""

from __future__ import annotations

from dataclasses import dataclass

#: ``created_by`` of a key made with the admin token or the ``chatkeep keys`` command.
ADMIN_CREATOR = "admin"


@dataclass(frozen=True, slots=True)
class KeyLimits:
    """What one key may use. A key made by another key never gets more than its maker."""

    #: Requests a second, sustained.
    rate: float
    #: Requests at once above the sustained rate (the bucket's size).
    burst: int
    #: Replies and reply streams open at once.
    max_streams: int
    #: Admission priority: 0 runs first, 9 last; a request never runs ahead of its key's.
    priority: int
    #: The models the key may use; ``None``: every configured model.
    models: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class ApiKey:
    """One API key, without its secret."""

    id: str
    owner_id: str
    label: str | None
    limits: KeyLimits
    created_at: float
    #: `ADMIN_CREATOR`, or the id of the key that made this one.
    created_by: str
    revoked_at: float | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None
