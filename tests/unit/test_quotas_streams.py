"""Open replies per key: the key's own limit, and the bound of the table."""

from __future__ import annotations

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
