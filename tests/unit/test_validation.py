"""`chatkeep.domain.validation`: what cannot come back unchanged is refused, saying where."""

from __future__ import annotations

import math

import pytest

from chatkeep.domain.validation import (
    INT64_MAX,
    INT64_MIN,
    MAX_JSON_DEPTH,
    InvalidValue,
    check_json,
    check_text,
)


def _nested(depth: int) -> object:
    value: object = 0
    for level in range(depth):
        value = {"k": value} if level % 2 else [value]
    return value


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        INT64_MIN,
        INT64_MAX,
        -0.0,
        1e308,
        "\U0001f600\u2028\x00",
        {"": [{}, [], ""]},
        _nested(MAX_JSON_DEPTH),
    ],
)
def test_storable_values_pass(value: object) -> None:
    check_json(value)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"a": [1, {"b": INT64_MAX + 1}]}, "integer at a.1.b is outside the 64-bit signed range"),
        ([INT64_MIN - 1], "integer at 0 is outside the 64-bit signed range"),
        ({"f": math.inf}, "number at f is not finite"),
        ([math.nan], "number at 0 is not finite"),
        (
            {"s": "ok\ud800"},
            "string at s is not valid Unicode: a lone surrogate \\ud800 at character 2",
        ),
        ({"\udfff": 1}, "key \\udfff is not valid Unicode"),
        ({1: 1}, "key 1 is not a string"),
        ({"t": (1, 2)}, "tuple at t is not a JSON value"),
    ],
)
def test_what_would_not_come_back_is_refused_naming_where(value: object, message: str) -> None:
    with pytest.raises(InvalidValue) as caught:
        check_json(value)
    assert message in str(caught.value)
    # The message goes into a JSON answer: it must itself be valid Unicode.
    str(caught.value).encode("utf-8")


def test_depth_counts_objects_and_arrays_from_the_outermost() -> None:
    check_json({"a": [1]}, max_depth=2)
    with pytest.raises(InvalidValue, match=r"nested more than 2 levels deep at a\.0"):
        check_json({"a": [[1]]}, max_depth=2)


def test_a_deep_value_is_walked_without_recursion() -> None:
    with pytest.raises(InvalidValue, match="levels deep"):
        check_json(_nested(100_000))


def test_long_paths_are_cut_in_messages() -> None:
    with pytest.raises(InvalidValue) as caught:
        check_json({"k" * 500: INT64_MAX + 1})
    assert len(str(caught.value)) < 200


def test_text_with_a_valid_pair_passes_and_a_lone_surrogate_does_not() -> None:
    check_text("\U0001f600")
    with pytest.raises(InvalidValue, match="lone surrogate \\\\udc00 at character 1"):
        check_text("a\udc00")
