"""The storage contract: one set of behaviours every `Store` backend must have."""

from __future__ import annotations

import asyncio

import pytest

from chatkeep.domain.records import Usage
from chatkeep.domain.replies import send_fingerprint
from chatkeep.errors import IdempotencyKeyReused, InvalidRequest, NotFound, ReplyInProgress
from chatkeep.storage.base import RECOVERED_REASON, Store
from tests.storage.conftest import SteppingClock

OWNER = "alice"


async def _exchange(store: Store, conversation_id: str, text: str, cid: str | None = None) -> None:
    start = await store.begin_reply(OWNER, conversation_id, content=text, client_message_id=cid)
    await store.finish_reply(
        OWNER,
        conversation_id,
        reply_to=start.user_message.id,
        content=f"re: {text}",
        status="complete",
        usage=Usage(3, 2),
    )


async def _exchange_with_fingerprint(
    store: Store, conversation_id: str, text: str, cid: str
) -> None:
    start = await store.begin_reply(
        OWNER,
        conversation_id,
        content=text,
        client_message_id=cid,
        fingerprint=send_fingerprint(text),
    )
    await store.finish_reply(
        OWNER,
        conversation_id,
        reply_to=start.user_message.id,
        content=f"re: {text}",
        status="complete",
    )


async def test_created_conversation_reads_back(store: Store) -> None:
    created = await store.create_conversation(
        OWNER, model="echo", title="t", system_prompt="be brief", metadata={"k": [1, 2]}
    )
    loaded = await store.get_conversation(OWNER, created.id)
    assert loaded.title == "t"
    assert loaded.system_prompt == "be brief"
    assert loaded.metadata == {"k": [1, 2]}
    assert loaded.status == "active"
    assert loaded.message_count == 0


async def test_other_owner_sees_nothing(store: Store) -> None:
    created = await store.create_conversation(OWNER, model="echo")
    await _exchange(store, created.id, "secret")
    with pytest.raises(NotFound):
        await store.get_conversation("mallory", created.id)
    with pytest.raises(NotFound):
        await store.list_messages("mallory", created.id, limit=10)
    with pytest.raises(NotFound):
        await store.begin_reply("mallory", created.id, content="x", client_message_id=None)
    with pytest.raises(NotFound):
        await store.update_conversation("mallory", created.id, title="pwned")
    with pytest.raises(NotFound):
        await store.delete_conversation("mallory", created.id)
    page = await store.list_conversations("mallory", status=None, limit=10, cursor=None)
    assert page.items == []
    assert (await store.get_conversation(OWNER, created.id)).title is None


async def test_send_and_reply_numbered_in_order(store: Store) -> None:
    conversation = await store.create_conversation(OWNER, model="echo")
    await _exchange(store, conversation.id, "one")
    await _exchange(store, conversation.id, "two")
    page = await store.list_messages(OWNER, conversation.id, limit=10)
    assert [(m.seq, m.role, m.content) for m in page.items] == [
        (1, "user", "one"),
        (2, "assistant", "re: one"),
        (3, "user", "two"),
        (4, "assistant", "re: two"),
    ]
    assert page.next_cursor is None
    loaded = await store.get_conversation(OWNER, conversation.id)
    assert loaded.message_count == 4
    assert loaded.usage == Usage(6, 4)
    assert page.items[1].reply_to == page.items[0].id


async def test_second_send_while_reply_open_conflicts(store: Store) -> None:
    conversation = await store.create_conversation(OWNER, model="echo")
    await store.begin_reply(OWNER, conversation.id, content="a", client_message_id=None)
    with pytest.raises(ReplyInProgress):
        await store.begin_reply(OWNER, conversation.id, content="b", client_message_id=None)


async def test_retried_client_message_id_stores_nothing_twice(store: Store) -> None:
    conversation = await store.create_conversation(OWNER, model="echo")
    await _exchange(store, conversation.id, "hello", cid="c-1")
    again = await store.begin_reply(
        OWNER, conversation.id, content="hello", client_message_id="c-1"
    )
    assert again.replayed
    assert again.user_message.seq == 1
    assert again.assistant_message is not None
    assert again.assistant_message.content == "re: hello"
    found = await store.find_send(OWNER, conversation.id, "c-1")
    assert found is not None and found.user_message.id == again.user_message.id
    assert await store.find_send(OWNER, conversation.id, "c-2") is None
    page = await store.list_messages(OWNER, conversation.id, limit=10)
    assert len(page.items) == 2


async def test_retry_while_reply_open_replays_without_conflict(store: Store) -> None:
    conversation = await store.create_conversation(OWNER, model="echo")
    first = await store.begin_reply(OWNER, conversation.id, content="q", client_message_id="c")
    again = await store.begin_reply(OWNER, conversation.id, content="q", client_message_id="c")
    assert again.replayed and again.assistant_message is None
    assert again.user_message.id == first.user_message.id


async def test_forward_pagination_covers_every_message_once(store: Store) -> None:
    conversation = await store.create_conversation(OWNER, model="echo")
    for n in range(7):
        await _exchange(store, conversation.id, str(n))
    seen: list[int] = []
    after = None
    while True:
        page = await store.list_messages(OWNER, conversation.id, limit=3, after=after)
        seen.extend(m.seq for m in page.items)
        if page.next_cursor is None:
            break
        after = int(page.next_cursor)
    assert seen == list(range(1, 15))


async def test_backward_pagination_returns_latest_before(store: Store) -> None:
    conversation = await store.create_conversation(OWNER, model="echo")
    for n in range(3):
        await _exchange(store, conversation.id, str(n))
    page = await store.list_messages(OWNER, conversation.id, limit=2, before=6)
    assert [m.seq for m in page.items] == [4, 5]
    assert page.next_cursor == "4"
    last = await store.list_messages(OWNER, conversation.id, limit=5, before=3)
    assert [m.seq for m in last.items] == [1, 2]
    assert last.next_cursor is None
    between = await store.list_messages(OWNER, conversation.id, limit=10, after=2, before=5)
    assert [m.seq for m in between.items] == [3, 4]
    empty = await store.list_messages(OWNER, conversation.id, limit=10, after=6)
    assert empty.items == [] and empty.next_cursor is None


async def test_recent_messages_newest_first(store: Store) -> None:
    conversation = await store.create_conversation(OWNER, model="echo")
    for n in range(3):
        await _exchange(store, conversation.id, str(n))
    recent = await store.recent_messages(OWNER, conversation.id, limit=3)
    assert [m.seq for m in recent] == [6, 5, 4]
    older = await store.recent_messages(OWNER, conversation.id, limit=10, before=3)
    assert [m.seq for m in older] == [2, 1]


async def test_conversation_listing_pages_and_filters(store: Store) -> None:
    ids = []
    for n in range(5):
        created = await store.create_conversation(OWNER, model="echo", title=str(n))
        ids.append(created.id)
    await store.update_conversation(OWNER, ids[1], status="archived")
    seen: list[str] = []
    cursor = None
    while True:
        page = await store.list_conversations(OWNER, status=None, limit=2, cursor=cursor)
        seen.extend(c.id for c in page.items)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == list(reversed(ids))
    archived = await store.list_conversations(OWNER, status="archived", limit=10, cursor=None)
    assert [c.id for c in archived.items] == [ids[1]]
    active = await store.list_conversations(OWNER, status="active", limit=10, cursor=None)
    assert ids[1] not in [c.id for c in active.items] and len(active.items) == 4


async def test_bad_cursor_is_a_client_error(store: Store) -> None:
    with pytest.raises(InvalidRequest):
        await store.list_conversations(OWNER, status=None, limit=2, cursor="not-a-cursor")


async def test_update_changes_only_given_fields(store: Store) -> None:
    created = await store.create_conversation(OWNER, model="echo", title="a", metadata={"x": 1})
    updated = await store.update_conversation(OWNER, created.id, title="b")
    assert updated.title == "b" and updated.metadata == {"x": 1}
    cleared = await store.update_conversation(OWNER, created.id, title=None, metadata={})
    assert cleared.title is None and cleared.metadata == {}


async def test_delete_removes_conversation_and_messages(store: Store) -> None:
    conversation = await store.create_conversation(OWNER, model="echo")
    await _exchange(store, conversation.id, "x")
    await store.delete_conversation(OWNER, conversation.id)
    with pytest.raises(NotFound):
        await store.get_conversation(OWNER, conversation.id)
    with pytest.raises(NotFound):
        await store.list_messages(OWNER, conversation.id, limit=5)
    with pytest.raises(NotFound):
        await store.delete_conversation(OWNER, conversation.id)


async def test_delete_refuses_while_a_reply_is_open(store: Store) -> None:
    conversation = await store.create_conversation(OWNER, model="echo")
    start = await store.begin_reply(OWNER, conversation.id, content="q", client_message_id=None)
    with pytest.raises(ReplyInProgress):
        await store.delete_conversation(OWNER, conversation.id)
    # Nothing was deleted, and the reply still closes normally.
    await store.finish_reply(
        OWNER, conversation.id, reply_to=start.user_message.id, content="a", status="complete"
    )
    assert len((await store.list_messages(OWNER, conversation.id, limit=5)).items) == 2
    await store.delete_conversation(OWNER, conversation.id)
    with pytest.raises(NotFound):
        await store.get_conversation(OWNER, conversation.id)


async def test_same_key_same_request_replays(store: Store) -> None:
    conversation = await store.create_conversation(OWNER, model="echo")
    fingerprint = send_fingerprint("hello")
    first = await store.begin_reply(
        OWNER, conversation.id, content="hello", client_message_id="k", fingerprint=fingerprint
    )
    again = await store.begin_reply(
        OWNER, conversation.id, content="hello", client_message_id="k", fingerprint=fingerprint
    )
    assert again.replayed and again.user_message.id == first.user_message.id
    found = await store.find_send(OWNER, conversation.id, "k", fingerprint)
    assert found is not None and found.user_message.id == first.user_message.id


async def test_same_key_different_request_is_refused(store: Store) -> None:
    conversation = await store.create_conversation(OWNER, model="echo")
    await _exchange_with_fingerprint(store, conversation.id, "hello", cid="k")
    with pytest.raises(IdempotencyKeyReused):
        await store.begin_reply(
            OWNER,
            conversation.id,
            content="goodbye",
            client_message_id="k",
            fingerprint=send_fingerprint("goodbye"),
        )
    with pytest.raises(IdempotencyKeyReused):
        await store.find_send(OWNER, conversation.id, "k", send_fingerprint("goodbye"))
    page = await store.list_messages(OWNER, conversation.id, limit=10)
    assert [m.content for m in page.items] == ["hello", "re: hello"]  # nothing stored


async def test_key_stored_without_fingerprint_replays(store: Store) -> None:
    conversation = await store.create_conversation(OWNER, model="echo")
    await _exchange(store, conversation.id, "hello", cid="k")  # no fingerprint, as before
    again = await store.begin_reply(
        OWNER,
        conversation.id,
        content="hello",
        client_message_id="k",
        fingerprint=send_fingerprint("hello"),
    )
    assert again.replayed and again.assistant_message is not None


async def test_times_come_from_the_injected_clock(store: Store, clock: SteppingClock) -> None:
    conversation = await store.create_conversation(OWNER, model="echo")
    assert conversation.created_at == clock.now
    start = await store.begin_reply(OWNER, conversation.id, content="q", client_message_id=None)
    assert start.user_message.created_at == clock.now
    reply = await store.finish_reply(
        OWNER, conversation.id, reply_to=start.user_message.id, content="a", status="complete"
    )
    assert reply.created_at == clock.now
    loaded = await store.get_conversation(OWNER, conversation.id)
    assert loaded.last_activity == reply.created_at


async def test_recovery_closes_open_replies_as_incomplete(store: Store) -> None:
    conversation = await store.create_conversation(OWNER, model="echo")
    await store.begin_reply(OWNER, conversation.id, content="q", client_message_id=None)
    assert await store.recover_open_replies() == 1
    assert await store.recover_open_replies() == 0
    page = await store.list_messages(OWNER, conversation.id, limit=5)
    reply = page.items[-1]
    assert (reply.role, reply.status, reply.reason) == ("assistant", "incomplete", RECOVERED_REASON)
    # The conversation accepts sends again.
    await _exchange(store, conversation.id, "next")


async def test_incomplete_reply_keeps_partial_text_and_reason(store: Store) -> None:
    conversation = await store.create_conversation(OWNER, model="echo")
    start = await store.begin_reply(OWNER, conversation.id, content="q", client_message_id=None)
    reply = await store.finish_reply(
        OWNER,
        conversation.id,
        reply_to=start.user_message.id,
        content="half",
        status="incomplete",
        reason="stream cut",
    )
    assert (reply.status, reply.content, reply.reason) == ("incomplete", "half", "stream cut")


async def test_incomplete_reply_keeps_the_code_of_its_cause(store: Store) -> None:
    conversation = await store.create_conversation(OWNER, model="echo")
    start = await store.begin_reply(OWNER, conversation.id, content="q", client_message_id="k")
    reply = await store.finish_reply(
        OWNER,
        conversation.id,
        reply_to=start.user_message.id,
        content="",
        status="incomplete",
        reason="backend answered 500",
        reason_code="provider_unavailable",
    )
    assert reply.reason_code == "provider_unavailable"
    replay = await store.find_send(OWNER, conversation.id, "k")
    assert replay is not None and replay.assistant_message is not None
    assert replay.assistant_message.reason_code == "provider_unavailable"
    page = await store.list_messages(OWNER, conversation.id, limit=5)
    assert page.items[-1].reason_code == "provider_unavailable"


async def test_concurrent_sends_to_many_conversations(store: Store) -> None:
    conversations = [await store.create_conversation(OWNER, model="echo") for _ in range(20)]
    await asyncio.gather(*(_exchange(store, c.id, c.id) for c in conversations))
    for conversation in conversations:
        page = await store.list_messages(OWNER, conversation.id, limit=10)
        assert [m.content for m in page.items] == [conversation.id, f"re: {conversation.id}"]


async def test_integrity_check_ok(store: Store) -> None:
    assert await store.integrity_check() == "ok"


async def test_summary_is_stored_and_never_moves_back(store: Store) -> None:
    conversation = await store.create_conversation(OWNER, model="echo")
    for n in range(3):
        await _exchange(store, conversation.id, str(n))
    await store.set_summary(OWNER, conversation.id, summary="first four", through_seq=4)
    await store.set_summary(OWNER, conversation.id, summary="older", through_seq=2)
    loaded = await store.get_conversation(OWNER, conversation.id)
    assert (loaded.summary, loaded.summary_through_seq) == ("first four", 4)
    page = await store.list_messages(OWNER, conversation.id, limit=10)
    assert len(page.items) == 6  # history untouched
    await store.set_summary("mallory", conversation.id, summary="x", through_seq=6)
    assert (await store.get_conversation(OWNER, conversation.id)).summary == "first four"
