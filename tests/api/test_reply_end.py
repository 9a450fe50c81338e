"""Every reply ends: a final event for its readers, an answer for its sender, never a hang."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from chatkeep.domain.records import Message
from chatkeep.errors import NotFound, ReplyInProgress, StorageError
from chatkeep.service.replies import ReplyService, SendResult
from chatkeep.storage.base import ReplyStart
from chatkeep.storage.memory import MemoryStore
from chatkeep.streaming.reply_stream import ReplyStream
from tests.api.conftest import ClientFactory, GatedProvider, sse_events

#: Generous bound on waits that must not fire: a hang fails the test instead of the suite.
MUST_NOT_HANG = 10


async def _conversation(client: httpx.AsyncClient, model: str = "echo") -> str:
    response = await client.post("/api/conversations", json={"model": model})
    cid: str = response.json()["id"]
    return cid


async def _send_to_gated(
    client: httpx.AsyncClient, gated: GatedProvider
) -> tuple[str, asyncio.Task[httpx.Response]]:
    """A conversation on the gated model, and a JSON send to it whose reply has begun."""
    cid = await _conversation(client, "gated")
    send = asyncio.create_task(
        client.post(f"/api/conversations/{cid}/messages", json={"content": "q"})
    )
    await asyncio.wait_for(gated.started.wait(), MUST_NOT_HANG)
    return cid, send


async def test_delete_while_a_reply_runs_is_refused_and_the_send_completes(
    client: httpx.AsyncClient, gated: GatedProvider
) -> None:
    cid, send = await _send_to_gated(client, gated)
    refused = await client.delete(f"/api/conversations/{cid}")
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "reply_in_progress"
    gated.release("answer", None)
    answer = await asyncio.wait_for(send, MUST_NOT_HANG)
    assert answer.status_code == 200
    assert answer.json()["assistant_message"]["content"] == "answer"
    assert (await client.delete(f"/api/conversations/{cid}")).status_code == 204


class CommitFails(MemoryStore):
    """A store whose reply commits fail with an error storage code never expects."""

    async def finish_reply(self, *args: Any, **kwargs: Any) -> Message:
        raise NotFound("the conversation vanished under the reply")


async def test_reply_ends_for_sender_and_readers_when_its_commit_raises(
    make_client: ClientFactory, gated: GatedProvider
) -> None:
    client = await make_client(store=CommitFails())
    cid = await _conversation(client, "gated")
    url = f"/api/conversations/{cid}/messages"

    async def streamed() -> str:
        async with client.stream("POST", url, json={"content": "q", "stream": True}) as response:
            return "".join([chunk async for chunk in response.aiter_text()])

    reader = asyncio.create_task(streamed())
    await asyncio.wait_for(gated.started.wait(), MUST_NOT_HANG)
    gated.release("lost", None)
    body = await asyncio.wait_for(reader, MUST_NOT_HANG)
    final = sse_events(body)[-1]
    assert final["event"] == "error"
    assert '"storage_unavailable"' in final["data"]


async def test_json_send_waits_a_bounded_time() -> None:
    """A reply that never ends (a bug) answers the sender after its bound, not never."""
    store = MemoryStore()
    conversation = await store.create_conversation("o", model="m")
    start = await store.begin_reply("o", conversation.id, content="q", client_message_id=None)
    stream = ReplyStream(
        reply_id=start.user_message.id,
        conversation_id=conversation.id,
        owner_id="o",
        message_event=b"{}",
        max_bytes=1024,
        clock=lambda: 0.0,
    )
    result = SendResult(ReplyStart(conversation, start.user_message, False), stream, None, 0.01)
    service = ReplyService.__new__(ReplyService)  # outcome() reads nothing of the service
    with pytest.raises(ReplyInProgress):
        await asyncio.wait_for(service.outcome(result), MUST_NOT_HANG)


async def test_a_failed_reply_reads_the_same_live_and_replayed(
    client: httpx.AsyncClient, gated: GatedProvider
) -> None:
    cid = await _conversation(client, "failing")
    url = f"/api/conversations/{cid}/messages"
    live = await client.post(url, json={"content": "q", "client_message_id": "k1"})
    replayed = await client.post(url, json={"content": "q", "client_message_id": "k1"})
    assert live.status_code == replayed.status_code == 502
    assert live.json() == replayed.json()

    async with client.stream(
        "POST", url, json={"content": "q", "client_message_id": "k1", "stream": True}
    ) as response:
        events = sse_events("".join([chunk async for chunk in response.aiter_text()]))
    assert events[-1]["event"] == "error"
    assert f'"code":"{live.json()["error"]["code"]}"' in events[-1]["data"]


async def test_cancel_stops_the_reply_and_stores_what_was_said(
    client: httpx.AsyncClient, gated: GatedProvider
) -> None:
    cid, send = await _send_to_gated(client, gated)
    gated.release("so far ")
    cancelled = await client.post(f"/api/conversations/{cid}/cancel")
    assert cancelled.status_code == 200
    answer = await asyncio.wait_for(send, MUST_NOT_HANG)
    assert answer.json()["error"]["code"] == "cancelled"
    stored = answer.json()["assistant_message"]
    assert (
        stored["status"] == "incomplete"
        and stored["content"] == cancelled.json()["assistant_message"]["content"]
    )
    assert (await client.post(f"/api/conversations/{cid}/cancel")).status_code == 404


async def test_cancel_of_a_missing_conversation_is_404(client: httpx.AsyncClient) -> None:
    assert (await client.post("/api/conversations/conv_nope/cancel")).status_code == 404


async def test_a_stop_before_the_reply_task_has_begun_still_ends_the_reply(
    client: httpx.AsyncClient, gated: GatedProvider
) -> None:
    """A cancel (or the end of a shutdown's grace) that comes before the reply's task ran
    its first step: the task must still commit the reply and publish its end."""
    cid = await _conversation(client, "gated")
    replies = client._transport.app.state.chatkeep.replies  # type: ignore[attr-defined]
    result = await replies.send("default", cid, content="q", client_message_id=None)
    # Awaited directly (a wait_for would run it as a task of its own, after the reply's):
    # the stop then happens before the reply's task has run at all.
    outcome = await replies.cancel("default", cid)
    assert not gated.started.is_set()  # the model was never asked
    assert outcome.code == "cancelled" and outcome.message.status == "incomplete"
    assert await asyncio.wait_for(result.source.wait(), MUST_NOT_HANG) is outcome
    history = (await client.get(f"/api/conversations/{cid}/messages")).json()["items"]
    assert [m["status"] for m in history] == ["complete", "incomplete"]


class CommitFailsTwice(MemoryStore):
    """A store whose first two reply commits fail, as one with a busy disk would."""

    failures = 0

    async def finish_reply(self, *args: Any, **kwargs: Any) -> Message:
        if self.failures < 2:
            self.failures += 1
            raise StorageError("database is locked")
        return await super().finish_reply(*args, **kwargs)


class TextUnstorable(MemoryStore):
    """A store that cannot take a reply's text, only an empty one."""

    async def finish_reply(self, *args: Any, **kwargs: Any) -> Message:
        if kwargs["content"]:
            raise StorageError("the disk is full")
        return await super().finish_reply(*args, **kwargs)


async def test_a_failed_reply_commit_is_tried_again(make_client: ClientFactory) -> None:
    client = await make_client(store=CommitFailsTwice())
    cid = await _conversation(client)
    url = f"/api/conversations/{cid}/messages"
    first = await client.post(url, json={"content": "one"})
    assert first.status_code == 200
    assert first.json()["assistant_message"]["content"] == "echo: one"
    assert (await client.post(url, json={"content": "two"})).status_code == 200


async def test_a_reply_that_cannot_be_stored_still_closes_its_conversation(
    make_client: ClientFactory,
) -> None:
    client = await make_client(store=TextUnstorable())
    cid = await _conversation(client)
    url = f"/api/conversations/{cid}/messages"
    first = await client.post(url, json={"content": "one"})
    assert first.status_code == 503
    assert first.json()["error"]["code"] == "storage_unavailable"
    stored = first.json()["assistant_message"]
    assert stored["status"] == "incomplete" and "could not be stored" in stored["reason"]
    conversation = (await client.get(f"/api/conversations/{cid}")).json()
    assert conversation["generating"] is False
    assert (await client.post(url, json={"content": "two"})).status_code == 503  # not 409


async def test_a_conversation_whose_model_is_gone_answers_the_same_live_and_replayed(
    client: httpx.AsyncClient,
) -> None:
    """A model removed from the configuration: the send is stored, its reply fails at once
    (incomplete, unknown_model), and a retry reads exactly like the first answer."""
    store = client._transport.app.state.chatkeep.store  # type: ignore[attr-defined]
    conversation = await store.create_conversation("default", model="retired")
    url = f"/api/conversations/{conversation.id}/messages"
    live = await client.post(url, json={"content": "q", "client_message_id": "k"})
    replayed = await client.post(url, json={"content": "q", "client_message_id": "k"})
    assert live.status_code == replayed.status_code == 422
    assert live.json() == replayed.json()
    assert live.json()["error"]["code"] == "unknown_model"
    assert live.json()["assistant_message"]["status"] == "incomplete"
