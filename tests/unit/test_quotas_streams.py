"""Open replies per key: the key's own limit, and the bound of the table."""

from __future__ import annotations

from dataclasses import replace

import pytest

from chatkeep.domain.keys import ApiKey, KeyLimits
from chatkeep.quotas.streams import OpenStreams


def make_key(key_id: str = "k1", max_streams: int = 2) -> ApiKey:
    return ApiKey(
        id=key_id,
        owner_id="owner",
        label=None,
        limits=KeyLimits(rate=10, burst=10, max_streams=max_streams, priority=0),
        created_at=0.0,
        created_by="admin",
    )


def test_a_key_opens_up_to_its_limit_and_one_more_after_one_closes() -> None:
    streams = OpenStreams(max_keys=10)
    key = make_key(max_streams=2)
    assert streams.enter(key) and streams.enter(key)
    assert not streams.enter(key)
    assert streams.refused == 1 and streams.count(key.id) == 2
    streams.leave(key)
    assert streams.enter(key)


def test_keys_count_apart() -> None:
    streams = OpenStreams(max_keys=10)
    first, second = make_key("a", max_streams=1), make_key("b", max_streams=1)
    assert streams.enter(first)
    assert not streams.enter(first)
    assert streams.enter(second)
    assert streams.total == 2


def test_a_key_with_nothing_open_has_no_entry() -> None:
    streams = OpenStreams(max_keys=10)
    key = make_key()
    streams.enter(key)
    streams.enter(key)
    streams.leave(key)
    streams.leave(key)
    assert len(streams) == 0 and streams.total == 0


def test_a_leave_without_its_enter_never_goes_negative() -> None:
    streams = OpenStreams(max_keys=10)
    key = make_key(max_streams=1)
    streams.leave(key)
    assert streams.count(key.id) == 0
    assert streams.enter(key)
    assert not streams.enter(key)


def test_the_table_holds_at_most_max_keys() -> None:
    streams = OpenStreams(max_keys=2)
    a, b, c = make_key("a"), make_key("b"), make_key("c")
    assert streams.enter(a) and streams.enter(b)
    assert not streams.enter(c)  # a third key: the table is full
    assert streams.enter(a)  # keys already in it keep their own limit
    assert len(streams) == 2 and streams.refused == 1
    streams.leave(b)
    assert streams.enter(c)


def test_a_table_of_no_keys_is_refused() -> None:
    with pytest.raises(ValueError):
        OpenStreams(max_keys=0)


def minted(key_id: str, maker: ApiKey, max_streams: int | None = None) -> ApiKey:
    """A key ``maker`` made, in its family, with at most its open replies."""
    family, budget = maker.family_of_its_keys()
    limits = maker.limits
    if max_streams is not None:
        limits = replace(limits, max_streams=max_streams)
    return replace(
        maker,
        id=key_id,
        limits=limits,
        created_by=maker.id,
        family_id=family,
        family_budget=budget,
    )


def test_keys_minted_by_a_key_share_its_open_replies() -> None:
    streams = OpenStreams(max_keys=20)
    root = make_key("root", max_streams=1)
    children = [minted(f"child{n}", root) for n in range(5)]
    grandchild = minted("grandchild", children[0])
    entered = [streams.enter(key) for key in [*children, grandchild, root]]
    assert entered == [True] + [False] * 6
    assert streams.total == 1 and streams.refused == 6
    streams.leave(children[0])
    assert streams.enter(grandchild)
    assert not streams.enter(root)


def test_a_minted_key_keeps_its_own_lower_limit_and_a_refusal_takes_nothing() -> None:
    streams = OpenStreams(max_keys=20)
    root = make_key("root", max_streams=3)
    narrow = minted("narrow", root, max_streams=1)
    assert streams.enter(narrow)
    assert not streams.enter(narrow)  # its own limit; the family's slot is not taken
    assert streams.enter(root) and streams.enter(root)
    assert not streams.enter(root)  # the family's three: narrow's one and root's two
    assert streams.total == 3
    streams.leave(narrow)
    streams.leave(root)
    streams.leave(root)
    assert streams.total == 0 and len(streams) == 0


def test_a_family_needs_room_for_both_of_its_entries() -> None:
    streams = OpenStreams(max_keys=2)
    other, root = make_key("other"), make_key("root")
    child = minted("child", root)
    assert streams.enter(other) and streams.enter(root)
    assert not streams.enter(child)  # its own entry would be a third
    assert len(streams) == 2
