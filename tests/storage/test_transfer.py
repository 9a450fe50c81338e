"""The transfer part of the storage contract: whole-conversation imports, retention batches."""

from __future__ import annotations

from dataclasses import replace

import pytest

from chatkeep.domain.records import Conversation, Message, Usage
from chatkeep.domain.replies import send_fingerprint
from chatkeep.errors import IdempotencyKeyReused, NotFound
from chatkeep.storage.base import Store
from chatkeep.storage.transfer_store import IdNotAvailable

OWNER = "alice"
OTHER = "bob"
LONG_AGO = 1_000_000_000.0  # 2001: idle by any policy
FAR_FUTURE = 4_000_000_000.0


def _conversation(cid: str, *, messages: int = 0, last_activity: float = LONG_AGO) -> Conversation:
    return Conversation(
        id=cid,
        owner_id="whoever the records say",  # the store uses the owner it is given
        title="imported",
        model="echo",
        system_prompt="be brief",
        metadata={"tags": ["a", "b"], "n": 1},
        status="active",
        created_at=last_activity - 100,
        updated_at=last_activity - 50,
        last_activity=last_activity,
        message_count=messages,
        usage=Usage(30, 20),
        summary="they said hello" if messages else None,
        summary_through_seq=min(messages, 2),
    )


def _messages(cid: str, count: int, *, prefix: str | None = None) -> list[Message]:
    """Alternating user / assistant messages; every other reply incomplete."""
    prefix = prefix or cid
    messages = []
    for seq in range(1, count + 1):
        user = seq % 2 == 1
        messages.append(
            Message(
                id=f"{prefix}_m{seq}",
                conversation_id=cid,
                seq=seq,
                role="user" if user else "assistant",
                content=f"message {seq} ✓",
                status="complete" if user or seq % 4 else "incomplete",
                created_at=LONG_AGO - 100 + seq,
                client_message_id=f"c{seq}" if user else None,
                reply_to=None if user else f"{prefix}_m{seq - 1}",
                reason=None if user or seq % 4 else "the backend went away",
                reason_code=None if user or seq % 4 else "stream_cut",
                usage=None if user else Usage(seq, 2 * seq),
            )
        )
    return messages


async def _import(store: Store, cid: str, count: int, **kwargs: float) -> bool:
    return await store.import_conversation(
        OWNER, _conversation(cid, messages=count, **kwargs), _messages(cid, count)
    )


async def _all_messages(store: Store, owner: str, cid: str) -> list[Message]:
    return (await store.list_messages(owner, cid, limit=10_000)).items


async def test_an_imported_conversation_reads_back_field_for_field(store: Store) -> None:
    conversation, messages = _conversation("conv_a", messages=6), _messages("conv_a", 6)
    assert await store.import_conversation(OWNER, conversation, messages) is True
    assert await store.get_conversation(OWNER, "conv_a") == replace(conversation, owner_id=OWNER)
    assert await _all_messages(store, OWNER, "conv_a") == messages


async def test_importing_an_id_the_owner_has_writes_nothing(store: Store) -> None:
    assert await _import(store, "conv_a", 4)
    await store.update_conversation(OWNER, "conv_a", title="renamed since")
    assert await _import(store, "conv_a", 6) is False
    assert (await store.get_conversation(OWNER, "conv_a")).title == "renamed since"
    assert len(await _all_messages(store, OWNER, "conv_a")) == 4


async def test_another_owners_id_is_neither_overwritten_nor_shown(store: Store) -> None:
    theirs = await store.import_conversation(
        OTHER, _conversation("conv_a", messages=2), _messages("conv_a", 2)
    )
    assert theirs
    with pytest.raises(IdNotAvailable) as refused:
        await _import(store, "conv_a", 4)
    assert OTHER not in refused.value.message
    assert len(await _all_messages(store, OTHER, "conv_a")) == 2
    with pytest.raises(NotFound):
        await store.get_conversation(OWNER, "conv_a")


async def test_a_failing_import_leaves_nothing(store: Store) -> None:
    assert await _import(store, "conv_a", 2)
    # The last of 2500 messages (past the first insert chunk) clashes with conv_a's.
    messages = _messages("conv_b", 2500)
    messages[-1] = replace(messages[-1], id="conv_a_m2")
    with pytest.raises(IdNotAvailable):
        await store.import_conversation(OWNER, _conversation("conv_b", messages=2500), messages)
    with pytest.raises(NotFound):
        await store.get_conversation(OWNER, "conv_b")
    # Nothing half-written blocks a corrected import.
    assert await _import(store, "conv_b", 2500)
    assert len(await _all_messages(store, OWNER, "conv_b")) == 2500


async def test_an_imported_send_replays_and_refuses_a_reused_id(store: Store) -> None:
    assert await _import(store, "conv_a", 4)
    replay = await store.begin_reply(
        OWNER,
        "conv_a",
        content="message 3 ✓",
        client_message_id="c3",
        fingerprint=send_fingerprint("message 3 ✓"),
    )
    assert replay.replayed
    assert replay.user_message.id == "conv_a_m3"
    assert replay.assistant_message is not None and replay.assistant_message.id == "conv_a_m4"
    with pytest.raises(IdempotencyKeyReused):
        await store.begin_reply(
            OWNER,
            "conv_a",
            content="something else",
            client_message_id="c3",
            fingerprint=send_fingerprint("something else"),
        )


async def test_an_imported_conversation_goes_on(store: Store) -> None:
    assert await _import(store, "conv_a", 4)
    start = await store.begin_reply(OWNER, "conv_a", content="next", client_message_id=None)
    assert start.user_message.seq == 5
    reply = await store.finish_reply(
        OWNER, "conv_a", reply_to=start.user_message.id, content="ok", status="complete"
    )
    assert reply.seq == 6
    assert (await store.get_conversation(OWNER, "conv_a")).message_count == 6


async def test_archive_takes_idle_active_conversations_a_batch_at_a_time(store: Store) -> None:
    for n in range(5):
        assert await _import(store, f"conv_{n}", 2, last_activity=LONG_AGO + n)
    recent = await store.create_conversation(OWNER, model="echo")
    first = await store.archive_idle(LONG_AGO + 10, 3)
    assert sorted(first) == ["conv_0", "conv_1", "conv_2"]  # oldest first
    second = await store.archive_idle(LONG_AGO + 10, 3)
    assert sorted(second) == ["conv_3", "conv_4"]
    assert await store.archive_idle(LONG_AGO + 10, 3) == []
    for n in range(5):
        archived = await store.get_conversation(OWNER, f"conv_{n}")
        assert archived.status == "archived"
        assert archived.last_activity == LONG_AGO + n  # idle time is kept, for the delete
    assert (await store.get_conversation(OWNER, recent.id)).status == "active"


async def test_delete_takes_idle_conversations_of_any_status_and_owner(store: Store) -> None:
    for n in range(3):
        assert await _import(store, f"conv_{n}", 4)
    assert await store.import_conversation(
        OTHER, _conversation("conv_x", messages=2), _messages("conv_x", 2)
    )
    await store.update_conversation(OWNER, "conv_0", status="archived")
    kept = await store.create_conversation(OWNER, model="echo")
    deleted = await store.delete_idle(LONG_AGO + 1, 3)
    assert len(deleted) == 3
    deleted += await store.delete_idle(LONG_AGO + 1, 3)
    assert sorted(deleted) == ["conv_0", "conv_1", "conv_2", "conv_x"]
    for owner, cid in [(OWNER, "conv_0"), (OWNER, "conv_1"), (OTHER, "conv_x")]:
        with pytest.raises(NotFound):
            await store.get_conversation(owner, cid)
    await store.get_conversation(OWNER, kept.id)
    # The messages went with them: their ids are free again.
    assert await _import(store, "conv_1", 4)


async def test_retention_never_touches_a_conversation_with_an_open_reply(store: Store) -> None:
    generating = await store.create_conversation(OWNER, model="echo")
    await store.begin_reply(OWNER, generating.id, content="hi", client_message_id=None)
    assert await store.archive_idle(FAR_FUTURE, 10) == []
    assert await store.delete_idle(FAR_FUTURE, 10) == []
    conversation = await store.get_conversation(OWNER, generating.id)
    assert conversation.status == "active" and conversation.open_reply_to is not None
