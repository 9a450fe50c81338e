"""Can a value be stored, read back and listed unchanged? Checks made at the edge.

Every check raises `InvalidValue` (a `ValueError`) whose message says what is wrong and
where, as a path inside the value (``a.b.0``); the caller prefixes the field's name.

Why these checks, and not others:

* **Valid Unicode.** JSON text may carry a lone surrogate (``"\\ud800"``); Python decodes
  it into a ``str`` that no UTF-8 encoder (SQLite's, orjson's) will write. Stored in
  memory, such a string breaks every later listing.
* **Integers in 64 bits (signed).** orjson and SQLite stop at 64 bits; what is stored
  must also be what every JSON client can read back, and signed 64 bits is what
  databases and most languages agree on.
* **Finite numbers.** ``1e400`` decodes to infinity, which JSON cannot carry: it came back
  as ``null``, not what was sent.
* **Nesting depth.** orjson refuses to write more than 255 levels; a stored value must fit
  inside every answer that wraps it (``{"items": [{"metadata": …}]}``), so the limit sits
  well below that: `MAX_JSON_DEPTH` is the ceiling any configured limit may take.

The walk is iterative, so a deep value cannot exhaust the interpreter's stack.
"""

from __future__ import annotations

import math
import re
from typing import NamedTuple

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

#: The deepest JSON value any setting may allow. orjson's limit is 255 levels, and the
#: largest answer wraps a stored value in four more ({"items": [{"metadata": …}]}); the
#: margin leaves room for any envelope a later surface adds.
MAX_JSON_DEPTH = 128

#: How much of a path or a key an error message quotes.
_SHOWN_CHARS = 80

_SURROGATE = re.compile("[\ud800-\udfff]")


class InvalidValue(ValueError):
    """A value chatkeep cannot store faithfully; the message says what is wrong and where."""


class _Step(NamedTuple):
    """One step down into a JSON value; linked to its parent so a path costs O(1) a node."""

    parent: _Step | None
    key: str | int


def check_text(text: str) -> None:
    """Refuse a string that is not valid Unicode (a lone surrogate), naming the position."""
    match = _SURROGATE.search(text)
    if match is not None:
        raise InvalidValue(
            f"not valid Unicode: a lone surrogate \\u{ord(match.group()):04x} "
            f"at character {match.start()}"
        )


def check_json(value: object, *, max_depth: int = MAX_JSON_DEPTH) -> None:
    """Refuse a decoded JSON value that would not come back unchanged.

    Objects and arrays count one level each, the outermost included; scalars count none.
    """
    stack: list[tuple[object, int, _Step | None]] = [(value, 0, None)]
    while stack:
        item, depth, step = stack.pop()
        if isinstance(item, dict | list):
            if depth + 1 > max_depth:
                raise InvalidValue(f"nested more than {max_depth} levels deep{_at(step)}")
            if isinstance(item, dict):
                for key, child in item.items():
                    _check_key(key, step)
                    stack.append((child, depth + 1, _Step(step, key)))
            else:
                for index, child in enumerate(item):
                    stack.append((child, depth + 1, _Step(step, index)))
        elif isinstance(item, str):
            _check_string(item, step)
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int):
            if not INT64_MIN <= item <= INT64_MAX:
                raise InvalidValue(
                    f"integer{_at(step)} is outside the 64-bit signed range "
                    "(-2^63 to 2^63-1); send larger numbers as strings"
                )
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise InvalidValue(f"number{_at(step)} is not finite; JSON cannot carry it")
        else:
            raise InvalidValue(f"{type(item).__name__}{_at(step)} is not a JSON value")


def _check_key(key: object, step: _Step | None) -> None:
    if not isinstance(key, str):
        raise InvalidValue(f"key {key!r}{_at(step)} is not a string")
    try:
        check_text(key)
    except InvalidValue as exc:
        raise InvalidValue(f"key {_show(key)}{_at(step)} is {exc}") from None


def _check_string(text: str, step: _Step | None) -> None:
    try:
        check_text(text)
    except InvalidValue as exc:
        raise InvalidValue(f"string{_at(step)} is {exc}") from None


def _at(step: _Step | None) -> str:
    """`` at a.b.0`` for a step inside the value; nothing at its root."""
    if step is None:
        return ""
    parts: list[str] = []
    while step is not None:
        parts.append(str(step.key))
        step = step.parent
    return " at " + _show(".".join(reversed(parts)))


def _show(text: str) -> str:
    """``text`` safe to put in a JSON answer (surrogates escaped), cut to a readable length."""
    shown = text.encode("utf-8", "backslashreplace").decode("utf-8")
    if len(shown) > _SHOWN_CHARS:
        shown = shown[:_SHOWN_CHARS] + "…"
    return shown
