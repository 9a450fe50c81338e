"""Replies and reply streams open at once, per API key.

A counter per key with at least one open, nothing for the others: the table holds as many
entries as keys with something open, and at most ``max_keys`` (a key beyond that is
refused as if over its own limit: the server is then holding ``max_keys`` keys' worth of
open replies, which is an overload in its own right).
"""

from __future__ import annotations

from chatkeep.domain.keys import ApiKey


class OpenStreams:
    """``enter(key)`` before a reply opens (``False``: over the key's ``max_streams``);
    ``leave(key)`` once it closed, exactly once per successful `enter`."""

    def __init__(self, max_keys: int) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self.max_keys = max_keys
        self._open: dict[str, int] = {}
        #: Replies refused for a bound.
        self.refused = 0

    def __len__(self) -> int:
        """Keys with at least one reply open."""
        return len(self._open)

    @property
    def total(self) -> int:
        """Replies open, every key together."""
        return sum(self._open.values())

    def count(self, key_id: str) -> int:
        """Replies ``key_id`` has open."""
        return self._open.get(key_id, 0)

    def enter(self, key: ApiKey) -> bool:
        """Count one more open reply of ``key``, unless that would pass a bound."""
        key_id = key.id
        held = self._open.get(key_id, 0)
        if held >= key.limits.max_streams or (held == 0 and len(self._open) >= self.max_keys):
            self.refused += 1
            return False
        self._open[key_id] = held + 1
        return True

    def leave(self, key: ApiKey) -> None:
        """One reply of ``key`` closed; a key with none left has no entry."""
        key_id = key.id
        held = self._open.get(key_id, 0)
        if held <= 1:
            # A leave without its enter is a bug of the caller; it must not go negative.
            self._open.pop(key_id, None)
        else:
            self._open[key_id] = held - 1
