"""A key never gets more than its creator has; the admin gets anything, defaults filling in."""

from __future__ import annotations

import math
from typing import Any

import pytest

from chatkeep.auth.grants import EVERY_MODEL, grant
from chatkeep.domain.keys import ApiKey, KeyLimits
from chatkeep.errors import Forbidden, InvalidRequest
from chatkeep.settings import AccessSettings

DEFAULTS = AccessSettings(rate=20.0, burst=40, max_streams=8, priority=0)


def key(models: tuple[str, ...] | None = ("echo", "small"), **limits: Any) -> ApiKey:
    values: dict[str, Any] = {"rate": 5.0, "burst": 10, "max_streams": 2, "priority": 4}
    values.update(limits)
    return ApiKey(
        id="key_creator",
        owner_id="alice",
        label=None,
        limits=KeyLimits(models=models, **values),
        created_at=1.0,
        created_by="admin",
    )


def test_the_admin_gets_the_defaults_for_what_it_leaves_out() -> None:
    limits = grant(None, owner="bob", defaults=DEFAULTS)
    assert limits == KeyLimits(rate=20.0, burst=40, max_streams=8, priority=0, models=None)


def test_the_admin_gets_anything_it_asks_for() -> None:
    limits = grant(
        None,
        owner="bob",
        rate=1000,
        burst=5000,
        max_streams=100,
        priority=9,
        models=["echo", "echo", "big"],
        defaults=DEFAULTS,
    )
    assert limits == KeyLimits(
        rate=1000.0, burst=5000, max_streams=100, priority=9, models=("echo", "big")
    )
    assert grant(None, owner="bob", models=EVERY_MODEL, defaults=DEFAULTS).models is None


def test_a_key_creates_a_key_with_its_own_limits_when_it_says_nothing() -> None:
    creator = key()
    assert grant(creator, owner="alice", defaults=DEFAULTS) == creator.limits


def test_a_key_may_create_a_key_with_less() -> None:
    limits = grant(
        key(),
        owner="alice",
        rate=0.5,
        burst=1,
        max_streams=1,
        priority=9,
        models=["small"],
        defaults=DEFAULTS,
    )
    assert limits == KeyLimits(rate=0.5, burst=1, max_streams=1, priority=9, models=("small",))


@pytest.mark.parametrize(
    "asked",
    [{"rate": 5.01}, {"burst": 11}, {"max_streams": 3}, {"priority": 3}, {"priority": 0}],
)
def test_a_key_cannot_create_a_key_with_more_than_it_has(asked: dict[str, Any]) -> None:
    with pytest.raises(Forbidden) as refused:
        grant(key(), owner="alice", defaults=DEFAULTS, **asked)
    [field] = asked
    assert refused.value.message.startswith(f"{field}:")


def test_a_key_cannot_create_a_key_for_another_owner() -> None:
    with pytest.raises(Forbidden, match="owner"):
        grant(key(), owner="bob", defaults=DEFAULTS)


def test_a_key_cannot_add_a_model_it_does_not_have() -> None:
    with pytest.raises(Forbidden, match="models: big"):
        grant(key(), owner="alice", models=["echo", "big"], defaults=DEFAULTS)


def test_a_key_restricted_to_models_cannot_create_an_unrestricted_one() -> None:
    with pytest.raises(Forbidden, match="every model"):
        grant(key(), owner="alice", models=EVERY_MODEL, defaults=DEFAULTS)


def test_an_unrestricted_key_may_hand_on_every_model_or_some() -> None:
    creator = key(models=None)
    assert grant(creator, owner="alice", models=EVERY_MODEL, defaults=DEFAULTS).models is None
    assert grant(creator, owner="alice", models=["big"], defaults=DEFAULTS).models == ("big",)


def test_a_minted_key_cannot_climb_back_above_its_maker() -> None:
    # The escalation found in LLM gateways: a low-rights key mints a key, which mints
    # another, each asking for more. Every step is held to the key that makes it.
    low = key(rate=1.0, burst=2, max_streams=1, priority=7, models=("small",))
    child_limits = grant(low, owner="alice", defaults=DEFAULTS)
    child = ApiKey("key_child", "alice", None, child_limits, 2.0, low.id)
    more: list[dict[str, Any]] = [
        {"rate": 20.0},
        {"burst": 40},
        {"max_streams": 8},
        {"priority": 0},
    ]
    for asked in more:
        with pytest.raises(Forbidden):
            grant(child, owner="alice", defaults=DEFAULTS, **asked)
    with pytest.raises(Forbidden):
        grant(child, owner="alice", models=EVERY_MODEL, defaults=DEFAULTS)
    with pytest.raises(Forbidden):
        grant(child, owner="alice", models=["echo"], defaults=DEFAULTS)


def test_a_revoked_key_creates_nothing() -> None:
    revoked = ApiKey("key_r", "alice", None, key().limits, 1.0, "admin", revoked_at=2.0)
    with pytest.raises(Forbidden, match="revoked"):
        grant(revoked, owner="alice", rate=1, defaults=DEFAULTS)


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"rate": 0}, "rate"),
        ({"rate": -1}, "rate"),
        ({"rate": math.inf}, "rate"),
        ({"rate": math.nan}, "rate"),
        ({"burst": 0}, "burst"),
        ({"max_streams": 0}, "max_streams"),
        ({"priority": -1}, "priority"),
        ({"priority": 10}, "priority"),
        ({"models": []}, "models"),
        ({"models": [""]}, "models"),
        ({"models": ["a\nb"]}, "models"),
        ({"models": ["m"] * 300 + [f"m{n}" for n in range(300)]}, "models"),
        ({"owner": ""}, "owner"),
        ({"owner": " alice"}, "owner"),
        ({"owner": "x" * 201}, "owner"),
        ({"owner": "a\x00b"}, "owner"),
    ],
)
def test_impossible_values_are_invalid_for_anyone(values: dict[str, Any], field: str) -> None:
    values.setdefault("owner", "alice")
    for creator in (None, key(models=None)):
        with pytest.raises(InvalidRequest) as refused:
            grant(creator, defaults=DEFAULTS, **values)
        assert refused.value.message.startswith(f"{field}:")


def test_a_single_model_name_is_not_taken_for_its_letters() -> None:
    assert grant(None, owner="bob", models="echo", defaults=DEFAULTS).models == ("echo",)


def test_a_model_outside_the_creators_is_refused_by_name_alone() -> None:
    with pytest.raises(Forbidden) as refused:
        grant(key(), owner="alice", models=["big", "echo", "zzz"], defaults=DEFAULTS)
    assert refused.value.message == (
        "models: big, zzz are not among this key's models (echo, small)"
    )


@pytest.mark.parametrize(
    ("asked", "message"),
    [
        ({"rate": 5.0000001}, "rate: 5.0000001 is more than this key's own 5"),
        ({"rate": 5.5}, "rate: 5.5 is more than this key's own 5"),
        ({"burst": 11}, "burst: 11 is more than this key's own 10"),
    ],
)
def test_a_refusal_shows_the_numbers_as_they_are(asked: dict[str, Any], message: str) -> None:
    with pytest.raises(Forbidden) as refused:
        grant(key(), owner="alice", defaults=DEFAULTS, **asked)
    assert refused.value.message == message


def test_an_empty_model_name_says_so() -> None:
    with pytest.raises(InvalidRequest, match="models: a name is empty"):
        grant(None, owner="bob", models=["echo", ""], defaults=DEFAULTS)
