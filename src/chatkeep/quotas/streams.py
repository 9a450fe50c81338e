"""Replies and reply streams open at once, per API key and per family of keys.

A counter per key with at least one open, nothing for the others. A key made by a key
counts twice: under its own id against its own ``max_streams``, and under its family's
root's id against the family's (`ApiKey.family_budget`, the root's, copied when the key
was made). The root's own counter is its family's, so the family's keys together, the
root included, never hold more than the root's ``max_streams``, however many keys were
minted. Both must allow a reply before either counts it.

The table holds as many entries as keys and families with something open, and at most
``max_keys`` (a reply needing an entry beyond that is refused as if over its own limit:
the server is then holding ``max_keys`` keys' worth of open replies, which is an overload
in its own right).
"""

from __future__ import annotations

from chatkeep.domain.keys import ApiKey


class OpenStreams:
    """``enter(key)`` before a reply opens (``False``: over the key's or its family's
    ``max_streams``); ``leave(key)`` once it closed, exactly once per successful `enter`."""

    def __init__(self, max_keys: int) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self.max_keys = max_keys
        self._open: dict[str, int] = {}
        self._total = 0
        #: Replies refused for a bound.
        self.refused = 0

    def __len__(self) -> int:
        """Keys (and families) with at least one reply open."""
        return len(self._open)

    @property
    def total(self) -> int:
        """Replies open, every key together."""
        return self._total

    def count(self, key_id: str) -> int:
        """Replies ``key_id`` has open; for a family's root, its whole family's."""
        return self._open.get(key_id, 0)

    def enter(self, key: ApiKey) -> bool:
        """Count one more open reply of ``key``, unless that would pass a bound."""
        key_id, family_id, budget = key.id, key.family_id, key.family_budget
        held = self._open.get(key_id, 0)
        if family_id is None or budget is None:
            if held >= key.limits.max_streams or (held == 0 and len(self._open) >= self.max_keys):
                self.refused += 1
                return False
            self._open[key_id] = held + 1
        else:
            shared = self._open.get(family_id, 0)
            entries = len(self._open) + (held == 0) + (shared == 0)
            if (
                held >= key.limits.max_streams
                or shared >= budget.max_streams
                or entries > self.max_keys
            ):
                self.refused += 1
                return False
            self._open[key_id] = held + 1
            self._open[family_id] = shared + 1
        self._total += 1
        return True

    def leave(self, key: ApiKey) -> None:
        """One reply of ``key`` closed; a key (or family) with none left has no entry."""
        if key.id not in self._open:
            # A leave without its enter is a bug of the caller; nothing may go negative.
            return
        self._total -= 1
        self._let_go(key.id)
        if key.family_id is not None and key.family_budget is not None:
            self._let_go(key.family_id)

    def _let_go(self, counted: str) -> None:
        held = self._open.get(counted, 0)
        if held <= 1:
            self._open.pop(counted, None)
        else:
            self._open[counted] = held - 1
