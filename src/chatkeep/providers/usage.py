"""Token counts reported by a backend, checked before anything else sees them.

A backend's usage is data from the network: a count may be missing, negative, a float,
a string or larger than any column can hold. The rule, for every wire format:

* both counts present, each an ``int`` (not a ``bool``) in ``[0, MAX_USAGE_TOKENS]``
  -> the backend's `Usage`;
* no usage at all (either count absent) -> ``None``;
* anything else -> ``None`` and one warning naming the backend.

``None`` means "the backend did not say": callers then count with chatkeep's own
estimate, as they do for a backend that never reports usage. An absurd count is thus
never stored as 0 (a silent lie) nor passed on to the store (where an integer past 64
bits would fail the write).
"""

from __future__ import annotations

import logging
from typing import TypeGuard

from chatkeep.domain.records import Usage

logger = logging.getLogger("chatkeep.providers")

#: The largest count accepted for one reply: 2**31 - 1 fits a signed 32-bit column, and
#: sums over billions of replies stay far inside SQLite's and PostgreSQL's 64-bit integers.
#: No model has a context within orders of magnitude of it.
MAX_USAGE_TOKENS = 2**31 - 1


#: How much of an invalid count a warning quotes.
_SHOWN_CHARS = 40


def _valid_count(value: object) -> TypeGuard[int]:
    # bool is an int subclass; `true` is not a token count.
    return type(value) is int and 0 <= value <= MAX_USAGE_TOKENS


def _shown(value: object) -> str:
    """A short, always printable description of a count (huge ints have no cheap repr)."""
    if isinstance(value, int) and value.bit_length() > 64:
        return f"an integer of {value.bit_length()} bits"
    text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 1] + "…"


def backend_usage(prompt: object, completion: object, backend: str) -> Usage | None:
    """The usage a backend reported, or None when it reported none or an invalid one."""
    if prompt is None or completion is None:
        return None
    if _valid_count(prompt) and _valid_count(completion):
        return Usage(prompt, completion)
    logger.warning(
        "%s reported an invalid usage (prompt %s, completion %s); "
        "counting with chatkeep's estimate instead",
        backend,
        _shown(prompt),
        _shown(completion),
    )
    return None
