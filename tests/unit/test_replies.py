"""Reply bookkeeping, decided once for every store: numbering, the open reply, usage."""

from __future__ import annotations

import itertools

import pytest

from chatkeep.domain import replies
from chatkeep.domain.records import Conversation, Usage
from chatkeep.errors import IdempotencyKeyReused, ReplyInProgress, StorageError

_ids = itertools.count(1)


def new_id(prefix: str) -> str:
    return f"{prefix}_{next(_ids)}"


def conversation(**changes: object) -> Conversation:
    base = Conversation(
        id="conv_1",
        owner_id="o",
        title=None,
        model="echo",
        system_prompt=None,
        metadata={},
        status="active",
        created_at=1.0,
        updated_at=1.0,
        last_activity=1.0,
    )
    for name, value in changes.items():
        setattr(base, name, value)
    return base


def test_a_send_and_its_reply_take_the_next_numbers() -> None:
    before = conversation(message_count=4, usage=Usage(10, 5))
    user = replies.user_message(before, content="hi", client_message_id="c", now=2.0, new_id=new_id)
    assert (user.seq, user.role, user.status, user.created_at) == (5, "user", "complete", 2.0)
    opened = replies.after_send(before, user)
    assert (opened.message_count, opened.open_reply_to, opened.last_activity) == (5, user.id, 2.0)
    assert before.open_reply_to is None  # the input is left as it was

    reply = replies.assistant_message(
        opened,
        content="hello",
        status="complete",
        reason=None,
        usage=Usage(3, 2),
        now=3.0,
        new_id=new_id,
    )
    assert (reply.seq, reply.role, reply.reply_to) == (6, "assistant", user.id)
    closed = replies.after_reply(opened, reply)
    assert (closed.message_count, closed.open_reply_to, closed.updated_at) == (6, None, 3.0)
    assert closed.usage == Usage(13, 7)


def test_a_reply_without_usage_adds_nothing() -> None:
    assert replies.add_usage(Usage(1, 2), None) == Usage(1, 2)
    assert replies.add_usage(Usage(1, 2), Usage(3, 4)) == Usage(4, 6)


def test_one_open_reply_at_a_time() -> None:
    with pytest.raises(ReplyInProgress):
        replies.check_can_begin(conversation(open_reply_to="msg_1"))
    replies.check_can_begin(conversation())


def test_only_the_open_reply_can_finish() -> None:
    with pytest.raises(StorageError):
        replies.check_can_finish(conversation(), "msg_1")
    with pytest.raises(StorageError):
        replies.check_can_finish(conversation(open_reply_to="msg_2"), "msg_1")
    replies.check_can_finish(conversation(open_reply_to="msg_1"), "msg_1")


def test_no_delete_under_an_open_reply() -> None:
    with pytest.raises(ReplyInProgress):
        replies.check_can_delete(conversation(open_reply_to="msg_1"))
    replies.check_can_delete(conversation())


def test_fingerprint_tells_requests_apart() -> None:
    assert replies.send_fingerprint("a") == replies.send_fingerprint("a")
    assert replies.send_fingerprint("a") != replies.send_fingerprint("b")
    assert replies.send_fingerprint("\ud800")  # a lone surrogate hashes, never crashes


def test_a_reused_key_replays_only_the_same_request() -> None:
    same, other = replies.send_fingerprint("a"), replies.send_fingerprint("b")
    replies.check_replay("k", same, same)
    replies.check_replay("k", None, same)  # stored before fingerprints existed
    replies.check_replay("k", same, None)  # a caller with nothing to compare
    with pytest.raises(IdempotencyKeyReused) as refused:
        replies.check_replay("k", same, other)
    assert refused.value.status_code == 409
    assert refused.value.code == "idempotency_key_reused"
