"""A pool behind chatkeep's own send: a backend dying mid-stream, as the store records it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from chatkeep.app import create_app
from chatkeep.settings import Settings
from tests.providers.pool_backends import StartScripted, pool_model, scripted_backends


@pytest.fixture
async def scripted() -> AsyncIterator[StartScripted]:
    async with scripted_backends() as start:
        yield start


async def wait_for(predicate: Callable[[], bool], what: str) -> None:
    for _ in range(500):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


async def test_only_replies_that_had_a_token_are_stored_incomplete(
    scripted: StartScripted, tmp_path: Path
) -> None:
    hold = asyncio.Event()
    doomed = await scripted(after_first=hold)
    spare = await scripted()
    model = pool_model(doomed.url, spare.url, balancing="ordered")
    settings = Settings(data_dir=tmp_path, models={"m": model}, default_model="m")
    app = create_app(settings)

    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ck") as client,
    ):
        ids = [(await client.post("/api/conversations", json={})).json()["id"] for _ in range(2)]

        async def send(cid: str) -> httpx.Response:
            return await client.post(f"/api/conversations/{cid}/messages", json={"content": "hi"})

        started = asyncio.ensure_future(send(ids[0]))  # gets its first token, then waits
        await wait_for(lambda: doomed.requests == 1, "the first send reached the backend")
        doomed.after_first, doomed.before_first = None, asyncio.Event()
        waiting = asyncio.ensure_future(send(ids[1]))  # gets nothing before the backend dies
        await wait_for(lambda: doomed.requests == 2, "the second send reached the backend")

        await doomed.stop()
        await asyncio.gather(started, waiting)

        histories = [
            (await client.get(f"/api/conversations/{cid}/messages")).json()["items"] for cid in ids
        ]

    cut, completed = (history[-1] for history in histories)
    assert (cut["status"], cut["content"]) == ("incomplete", "tok0 ")
    assert (completed["status"], completed["content"]) == ("complete", "tok0 tok1 tok2 ")
    assert spare.answered == 1
