"""One key floods; another key's requests go through as if it were not there.

Counted, not timed: how many of each key's requests succeeded and how many were refused.
"""

from __future__ import annotations

import asyncio

import httpx

from tests.api.conftest import ClientFactory, GatedProvider

ADMIN = {"authorization": "Bearer " + "a" * 40}


async def _key(client: httpx.AsyncClient, owner: str, **limits: object) -> dict[str, str]:
    answer = await client.post("/admin/keys", json={"owner": owner, **limits}, headers=ADMIN)
    assert answer.status_code == 201, answer.text
    return {"authorization": f"Bearer {answer.json()['secret']}"}


async def test_a_flooding_key_gets_429_and_another_key_is_untouched(
    make_client: ClientFactory,
) -> None:
    client = await make_client(auth="keys", admin_token="a" * 40)
    flooder = await _key(client, "flooder", rate=1, burst=5)
    neighbour = await _key(client, "neighbour", rate=1, burst=10)
    body = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}

    async def ask(headers: dict[str, str]) -> httpx.Response:
        return await client.post("/v1/chat/completions", json=body, headers=headers)

    flood = [ask(flooder) for _ in range(200)]
    calm = [ask(neighbour) for _ in range(10)]
    answers = await asyncio.gather(*flood, *calm)
    flooded, neighbours = answers[:200], answers[200:]

    refused = [a for a in flooded if a.status_code == 429]
    # The burst and at most a few seconds' worth of the rate got through; the rest waited.
    assert len(refused) >= 180
    assert {a.status_code for a in flooded} <= {200, 429}
    assert all(int(a.headers["retry-after"]) >= 1 for a in refused)
    assert {a.json()["error"]["code"] for a in refused} == {"rate_limited"}
    assert [a.status_code for a in neighbours] == [200] * 10
    metrics = (await client.get("/metrics", headers=ADMIN)).text
    assert 'chatkeep_quota_refusals_total{reason="rate"} ' + f"{len(refused)}.0" in metrics


async def test_one_owners_queue_share_is_bounded_and_others_still_get_in(
    make_client: ClientFactory, gated: GatedProvider
) -> None:
    client = await make_client(
        auth="keys",
        admin_token="a" * 40,
        max_inflight_generations=1,
        max_queued_generations=50,
        max_queued_per_owner=3,
    )
    flooder = await _key(client, "flooder", max_streams=50)
    neighbour = await _key(client, "neighbour")

    async def conversation(headers: dict[str, str]) -> str:
        answer = await client.post("/api/conversations", json={"model": "gated"}, headers=headers)
        return str(answer.json()["id"])

    async def send(headers: dict[str, str], conversation_id: str) -> httpx.Response:
        return await client.post(
            f"/api/conversations/{conversation_id}/messages",
            json={"content": "work order"},
            headers=headers,
        )

    flood_ids = [await conversation(flooder) for _ in range(8)]
    neighbour_id = await conversation(neighbour)
    running = asyncio.create_task(send(flooder, flood_ids[0]))
    await asyncio.wait_for(gated.started.wait(), 5)
    queued = [asyncio.create_task(send(flooder, cid)) for cid in flood_ids[1:]]
    # Four of the seven cannot wait: the flooder's share of the queue is three.
    refusals = []
    for _ in range(100):
        refusals = [t for t in queued if t.done()]
        if len(refusals) == 4:
            break
        await asyncio.sleep(0.01)
    assert len(refusals) == 4
    for task in refusals:
        answer = task.result()
        assert answer.status_code == 429 and answer.headers["retry-after"]
    theirs = asyncio.create_task(send(neighbour, neighbour_id))
    for _ in range(5):  # the running reply, three queued ones and the neighbour's
        gated.release("done", None)
    outcomes = await asyncio.wait_for(
        asyncio.gather(running, theirs, *(t for t in queued if t not in refusals)), 10
    )
    assert [o.status_code for o in outcomes] == [200] * 5
