"""API keys as stored: who a key acts for, what it may do, and the family it belongs to.

The secret itself is never stored: only its hash (`chatkeep.auth.secrets`), so a copy of
the database does not hand out working keys.

**Families.** A key made by the admin is the root of a family; every key a key makes,
and every key those make, belongs to its maker's family. Each key has its own limits
(never more than its maker's), and the family as a whole has its root's rate, burst and
open replies (`FamilyBudget`, copied into each member when it is made): minting keys
divides a budget, it never multiplies it. A root's own counters are its family's.
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

    def budget(self) -> FamilyBudget:
        """These limits as the budget of a family this key is the root of."""
        return FamilyBudget(self.rate, self.burst, self.max_streams)


@dataclass(frozen=True, slots=True)
class FamilyBudget:
    """What every key of one family may use together: its root key's limits."""

    #: Requests a second, sustained, the family's keys together.
    rate: float
    #: Requests at once above the rate, together.
    burst: int
    #: Replies and reply streams open at once, together.
    max_streams: int


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
    #: The id of the family's root (the admin-made key this one descends from); ``None``
    #: for a root itself.
    family_id: str | None = None
    #: The root's limits, as they were when this key was made; ``None`` for a root, whose
    #: own limits are its family's.
    family_budget: FamilyBudget | None = None

    def __post_init__(self) -> None:
        if (self.family_id is None) != (self.family_budget is None):
            raise ValueError("a key of a family has both its family_id and family_budget")

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    @property
    def family(self) -> str:
        """The id a family's shared counters are kept under: its root's (a root's own)."""
        return self.family_id if self.family_id is not None else self.id

    def family_of_its_keys(self) -> tuple[str, FamilyBudget]:
        """The family, and its budget, of a key this key makes: this key's own family."""
        if self.family_id is not None and self.family_budget is not None:
            return self.family_id, self.family_budget
        return self.id, self.limits.budget()


def number_text(value: float) -> str:
    """A limit as a message shows it, exactly: ``2`` for 2.0, ``2.0000001`` as it is.

    (``format(value, "g")`` rounds to six digits: ``2.0000001`` would read as ``2``, and
    "2 is more than 2" is no explanation.)
    """
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return repr(value)
