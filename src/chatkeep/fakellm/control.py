"""Changing a running fake backend: ``POST /_fake/config`` bodies, read and checked.

A body is a JSON object of `FakeLLMConfig` fields to change, for example
``{"fail_rate": 1.0}`` or ``{"status_429_rate": 1.0, "retry_after_seconds": 2}``; the
fields left out keep their values. A change is all or nothing: an unknown field, a
value of the wrong type or a resulting config that does not hold leaves the backend as
it was and answers 400.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

import orjson

from chatkeep.fakellm.config import FakeLLMConfig
from chatkeep.fakellm.wire import BadRequest

_HINTS: dict[str, Any] = typing.get_type_hints(FakeLLMConfig)


def config_as_dict(config: FakeLLMConfig) -> dict[str, Any]:
    """The config as JSON-ready data (what ``GET /_fake/config`` answers)."""
    data = dataclasses.asdict(config)
    data["models"] = list(config.models)
    return data


def changed_config(config: FakeLLMConfig, body: bytes) -> FakeLLMConfig:
    """``config`` with the changes in ``body``; `BadRequest` says what is wrong with them."""
    try:
        changes = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"body is not JSON: {exc}") from None
    if not isinstance(changes, dict):
        raise BadRequest("body must be a JSON object of config fields")
    unknown = sorted(name for name in changes if name not in _HINTS)
    if unknown:
        raise BadRequest(f"unknown fields {unknown}; known: {sorted(_HINTS)}")
    values = {name: _value(name, value, _HINTS[name]) for name, value in changes.items()}
    try:
        return dataclasses.replace(config, **values)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


def _value(name: str, value: Any, hint: Any) -> Any:
    """``value`` as the field's type; JSON has no tuples and writes 2.0 as 2."""
    kinds = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    for kind in kinds:
        if kind is type(None) and value is None:
            return None
        if kind is bool and isinstance(value, bool):
            return value
        if isinstance(value, bool):
            continue  # JSON true is not a number here, though Python's bool is an int
        if kind is int and isinstance(value, int):
            return value
        if kind is float and isinstance(value, int | float):
            return float(value)
        if typing.get_origin(kind) is tuple and _strings(value):
            return tuple(value)
    expected = " or ".join(_describe(kind) for kind in kinds)
    shown = orjson.dumps(value).decode()
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    raise BadRequest(f"{name} must be {expected}, not {shown}")


def _strings(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, str) for v in value)


def _describe(kind: Any) -> str:
    if kind is type(None):
        return "null"
    if typing.get_origin(kind) is tuple:
        return "a non-empty list of strings"
    return {bool: "a boolean", int: "an integer", float: "a number"}.get(kind, str(kind))
