"""What an import says is wrong, in the export format's own words.

The models of `chatkeep.transfer.format` are checked by pydantic, whose messages speak
of Python values ("Input should be less than or equal to 253402300799" for a time that
is not a number at all; "Value should have at most 200 items" for a string). A rejection
is read by whoever wrote the document, so each error is said again here in the terms of
``docs/export-format.md``: the field's path, then what it must be. A type of error not in
the table keeps pydantic's message.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

#: How many problems one rejection lists before "and more".
SHOWN_PROBLEMS = 5
#: The fields that hold a time (seconds since the epoch).
TIME_FIELDS = frozenset({"exported_at", "created_at", "updated_at", "last_activity"})
#: How much of a path's part a message quotes.
_SHOWN_CHARS = 80

#: Errors whose meaning does not depend on the constraint's values.
_PLAIN: dict[str, str] = {
    "missing": "required, but missing",
    "extra_forbidden": "not a field of the format",
    "finite_number": "not a finite number",
    "float_type": "must be a number",
    "int_type": "must be an integer",
    "string_type": "must be a string",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
    "list_type": "must be a list",
}


def describe_errors(exc: ValidationError) -> str:
    """``messages.3.role: must be 'system', 'user' or 'assistant'; …``"""
    return join_problems(
        [
            f"{'.'.join(shown_part(p) for p in error['loc']) or 'conversation'}: {_said(error)}"
            for error in exc.errors(include_url=False, include_input=False)
        ]
    )


def join_problems(problems: list[str]) -> str:
    """Up to `SHOWN_PROBLEMS` problems in one line, then "and more"."""
    shown = "; ".join(problems[:SHOWN_PROBLEMS])
    return f"{shown}; and more" if len(problems) > SHOWN_PROBLEMS else shown


def shown_part(part: str | int) -> str:
    """A part of a path, safe in a JSON answer (a key may hold a lone surrogate), cut short."""
    text = str(part).encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "…"


def _said(error: ErrorDetails) -> str:
    kind = error["type"]
    context: Mapping[str, Any] = error.get("ctx") or {}
    fields = [part for part in error["loc"] if isinstance(part, str)]
    field = fields[-1] if fields else ""
    if kind in _PLAIN:
        return _PLAIN[kind]
    if kind in ("greater_than_equal", "less_than_equal") and field in TIME_FIELDS:
        return "not a time chatkeep keeps: seconds since 1970-01-01 UTC, up to the end of 9999"
    if kind == "greater_than_equal":
        return f"must be at least {context['ge']}"
    if kind == "less_than_equal":
        return f"must be at most {context['le']}"
    if kind in ("string_too_long", "too_long"):
        return f"longer than {context['max_length']} characters"
    if kind in ("string_too_short", "too_short"):
        required = field == "model"
        return "must not be empty" if required else "must not be empty: null when there is none"
    if kind == "string_pattern_mismatch":
        if field == "reason_code":
            return "must be an error code: a lowercase letter, then up to 63 of a-z 0-9 _"
        return "must be an id: 1 to 128 of A-Z a-z 0-9 _ -"
    if kind == "literal_error":
        return f"must be {context['expected']}"
    return error["msg"]
