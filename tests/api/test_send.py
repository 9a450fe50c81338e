"""Sending messages: JSON and streamed replies, idempotency, conflicts, failures, load."""

from __future__ import annotations

import asyncio
import json

import httpx

from chatkeep.errors import StreamCut
from tests.api.conftest import ClientFactory, GatedProvider, sse_events


async def _conversation(client: httpx.AsyncClient, model: str = "echo") -> str:
    response = await client.post("/api/conversations", json={"model": model})
    assert response.status_code == 201
    conversation_id: str = response.json()["id"]
    return conversation_id


async def test_json_send_answers_both_committed_messages(client: httpx.AsyncClient) -> None:
    cid = await _conversation(client)
    response = await client.post(f"/api/conversations/{cid}/messages", json={"content": "hello"})
    assert response.status_code == 200
    body = response.json()
    assert body["user_message"]["seq"] == 1 and body["user_message"]["content"] == "hello"
    assistant = body["assistant_message"]
    assert (assistant["seq"], assistant["role"], assistant["status"]) == (
        2,
        "assistant",
        "complete",
    )
    assert assistant["content"] == "echo: hello"
    history = (await client.get(f"/api/conversations/{cid}/messages")).json()["items"]
    assert [m["id"] for m in history] == [body["user_message"]["id"], assistant["id"]]


async def test_streamed_send_emits_message_deltas_done(client: httpx.AsyncClient) -> None:
    cid = await _conversation(client)
    response = await client.post(
        f"/api/conversations/{cid}/messages", json={"content": "one two three", "stream": True}
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    names = [e["event"] for e in events]
    assert names[0] == "message" and names[-1] == "done"
    assert set(names[1:-1]) == {"delta"}
    text = "".join(json.loads(e["data"])["text"] for e in events if e["event"] == "delta")
    assert text == "echo: one two three"
    assert all(e.get("id") for e in events)
    ids = [int(e["id"].rsplit(":", 1)[1]) for e in events]
    assert ids == sorted(ids)
    done = json.loads(events[-1]["data"])
    assert done["status"] == "complete" and done["content"] == text
    assert "retry" in events[0]


async def test_accept_header_selects_streaming(client: httpx.AsyncClient) -> None:
    cid = await _conversation(client)
    response = await client.post(
        f"/api/conversations/{cid}/messages",
        json={"content": "hey"},
        headers={"accept": "text/event-stream"},
    )
    assert [e["event"] for e in sse_events(response.text)][-1] == "done"


async def test_retry_with_client_message_id_returns_first_result(
    client: httpx.AsyncClient,
) -> None:
    cid = await _conversation(client)
    url = f"/api/conversations/{cid}/messages"
    first = await client.post(url, json={"content": "hi", "client_message_id": "abc"})
    again = await client.post(url, json={"content": "hi", "client_message_id": "abc"})
    assert again.status_code == 200
    assert again.json() == first.json()
    header = await client.post(url, json={"content": "hi"}, headers={"Idempotency-Key": "abc"})
    assert header.json() == first.json()
    streamed = await client.post(
        url, json={"content": "hi", "client_message_id": "abc", "stream": True}
    )
    events = sse_events(streamed.text)
    assert json.loads(events[-1]["data"])["id"] == first.json()["assistant_message"]["id"]
    history = (await client.get(url)).json()["items"]
    assert len(history) == 2


async def test_mismatched_idempotency_key_is_422(client: httpx.AsyncClient) -> None:
    cid = await _conversation(client)
    response = await client.post(
        f"/api/conversations/{cid}/messages",
        json={"content": "hi", "client_message_id": "a"},
        headers={"Idempotency-Key": "b"},
    )
    assert response.status_code == 422


async def test_bad_send_bodies_are_422(make_client: ClientFactory) -> None:
    client = await make_client(max_message_chars=10)
    cid = await _conversation(client)
    url = f"/api/conversations/{cid}/messages"
    assert (await client.post(url, json={})).status_code == 422
    assert (await client.post(url, json={"content": ""})).status_code == 422
    too_long = await client.post(url, json={"content": "x" * 11})
    assert too_long.status_code == 422 and "limit is 10" in too_long.json()["error"]["message"]
    assert (
        await client.post("/api/conversations/conv_x/messages", json={"content": "a"})
    ).status_code == 404


async def test_send_while_reply_generating_is_409(
    client: httpx.AsyncClient, gated: GatedProvider
) -> None:
    cid = await _conversation(client, "gated")
    url = f"/api/conversations/{cid}/messages"
    first = asyncio.create_task(client.post(url, json={"content": "slow"}))
    await asyncio.wait_for(gated.started.wait(), 5)
    conflict = await client.post(url, json={"content": "impatient"})
    assert conflict.status_code == 409
    assert conflict.json()["error"]["code"] == "reply_in_progress"
    gated.release("fine", None)
    assert (await asyncio.wait_for(first, 5)).json()["assistant_message"]["content"] == "fine"


async def test_failing_backend_stores_incomplete_reply(client: httpx.AsyncClient) -> None:
    cid = await _conversation(client, "failing")
    response = await client.post(f"/api/conversations/{cid}/messages", json={"content": "q"})
    assert response.status_code == 502
    body = response.json()
    assert "boom" in body["error"]["message"]
    assert body["assistant_message"]["status"] == "incomplete"
    assert body["assistant_message"]["content"] == "partial text"
    history = (await client.get(f"/api/conversations/{cid}/messages")).json()["items"]
    assert history[-1]["status"] == "incomplete" and "boom" in history[-1]["reason"]


async def test_cut_stream_ends_with_error_event(
    client: httpx.AsyncClient, gated: GatedProvider
) -> None:
    cid = await _conversation(client, "gated")
    gated.release("half ", StreamCut("stream ended before its end marker"))
    response = await client.post(
        f"/api/conversations/{cid}/messages", json={"content": "q", "stream": True}
    )
    events = sse_events(response.text)
    assert events[-1]["event"] == "error"
    final = json.loads(events[-1]["data"])
    assert final["message"]["status"] == "incomplete" and final["message"]["content"] == "half "


async def test_reply_survives_client_going_away(
    client: httpx.AsyncClient, gated: GatedProvider
) -> None:
    cid = await _conversation(client, "gated")
    url = f"/api/conversations/{cid}/messages"
    request = asyncio.create_task(client.post(url, json={"content": "q", "stream": True}))
    await asyncio.wait_for(gated.started.wait(), 5)
    request.cancel()
    gated.release("still ", "committed", None)
    for _ in range(200):
        history = (await client.get(url)).json()["items"]
        if len(history) == 2:
            break
        await asyncio.sleep(0.01)
    assert history[-1]["content"] == "still committed"
    assert history[-1]["status"] == "complete"


async def test_queue_full_is_503_with_retry_after(
    make_client: ClientFactory, gated: GatedProvider
) -> None:
    client = await make_client(max_inflight_generations=1, max_queued_generations=0)
    busy = await _conversation(client, "gated")
    other = await _conversation(client)
    first = asyncio.create_task(
        client.post(f"/api/conversations/{busy}/messages", json={"content": "q"})
    )
    await asyncio.wait_for(gated.started.wait(), 5)
    refused = await client.post(f"/api/conversations/{other}/messages", json={"content": "q"})
    assert refused.status_code == 503
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.json()["error"]["code"] == "overloaded"
    # Nothing was stored for the refused send.
    assert (await client.get(f"/api/conversations/{other}")).json()["message_count"] == 0
    gated.release(None)
    await asyncio.wait_for(first, 5)
    ok = await client.post(f"/api/conversations/{other}/messages", json={"content": "q"})
    assert ok.status_code == 200


async def test_resume_after_the_end_replays_committed_reply(client: httpx.AsyncClient) -> None:
    cid = await _conversation(client)
    sent = await client.post(
        f"/api/conversations/{cid}/messages", json={"content": "a b c", "stream": True}
    )
    events = sse_events(sent.text)
    middle = events[2]["id"]
    resumed = sse_events(
        (
            await client.get(f"/api/conversations/{cid}/stream", headers={"Last-Event-ID": middle})
        ).text
    )
    later_text = "".join(json.loads(e["data"])["text"] for e in resumed if e["event"] == "delta")
    full = "".join(json.loads(e["data"])["text"] for e in events if e["event"] == "delta")
    seen = "".join(json.loads(e["data"])["text"] for e in events[1:3] if e["event"] == "delta")
    assert seen + later_text == full
    assert resumed[-1]["event"] == "done"
    assert resumed[0]["event"] != "message"


async def test_resume_mid_stream_continues_live(
    client: httpx.AsyncClient, gated: GatedProvider
) -> None:
    cid = await _conversation(client, "gated")
    url = f"/api/conversations/{cid}/messages"
    gated.release("one ", "two ")
    request = asyncio.create_task(client.post(url, json={"content": "q", "stream": True}))
    await asyncio.wait_for(gated.started.wait(), 5)
    resume = asyncio.create_task(
        client.get(f"/api/conversations/{cid}/stream", headers={"Last-Event-ID": "x:1"})
    )
    await asyncio.sleep(0)
    gated.release("three", None)
    full = sse_events((await asyncio.wait_for(request, 5)).text)
    first_id = full[1]["id"]
    resumed = sse_events((await asyncio.wait_for(resume, 5)).text)
    assert resumed[-1]["event"] == "done"
    # A foreign Last-Event-ID resumes from the start of the current reply.
    assert resumed[0]["event"] == "message"
    again = sse_events(
        (
            await client.get(
                f"/api/conversations/{cid}/stream", headers={"Last-Event-ID": first_id}
            )
        ).text
    )
    text = "".join(json.loads(e["data"])["text"] for e in again if e["event"] == "delta")
    assert json.loads(full[1]["data"])["text"] + text == "one two three"


async def test_stream_of_conversation_without_reply_is_404(client: httpx.AsyncClient) -> None:
    cid = await _conversation(client)
    assert (await client.get(f"/api/conversations/{cid}/stream")).status_code == 404


async def test_sends_are_served_from_the_working_set(client: httpx.AsyncClient) -> None:
    cid = await _conversation(client)
    for n in range(3):
        await client.post(f"/api/conversations/{cid}/messages", json={"content": f"m{n}"})
    working_set = (await client.get("/admin/stats")).json()["caches"]["working_set"]
    assert working_set["hits"] >= 3 and working_set["misses"] == 0
    assert 0 < working_set["currsize"] <= working_set["maxsize"]
    await client.patch(f"/api/conversations/{cid}", json={"title": "renamed"})
    await client.post(f"/api/conversations/{cid}/messages", json={"content": "after"})
    history = (await client.get(f"/api/conversations/{cid}/messages")).json()["items"]
    assert [m["seq"] for m in history] == list(range(1, 9))


async def test_silent_model_is_cut_by_the_idle_timeout(
    make_client: ClientFactory, gated: GatedProvider
) -> None:
    client = await make_client(stream_idle_timeout_seconds=0.05)
    cid = await _conversation(client, "gated")
    gated.release("first ")  # then the model goes quiet
    response = await client.post(f"/api/conversations/{cid}/messages", json={"content": "q"})
    assert response.status_code == 504
    body = response.json()
    assert body["error"]["code"] == "provider_timeout"
    assert body["assistant_message"]["status"] == "incomplete"
    assert body["assistant_message"]["content"] == "first "
    assert "sent nothing" in body["assistant_message"]["reason"]
