"""A client that leaves is seen at once: the handler is cancelled and the leave is counted.

Every wait below is bounded by a timeout that must not fire; the fake's pauses are gates
the test opens, so nothing depends on how fast the machine is.
"""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp
import pytest

from tests.fakellm.conftest import OLLAMA, OPENAI, GatedSleep, StartServer, chat, post


@pytest.mark.parametrize("path", [OPENAI, OLLAMA], ids=["openai", "ollama"])
async def test_a_client_leaving_before_the_first_token_is_counted(
    start_server: StartServer, http: aiohttp.ClientSession, path: str
) -> None:
    # The loser of a hedged request: its headers came, its first token never did.
    sleep = GatedSleep()
    server = await start_server(tokens=3, first_token_ms=1000, sleep=sleep)

    async with asyncio.timeout(5):
        response = await http.post(server.url + path, data=chat(stream=True))
        await sleep.entered.wait()
        assert server.app.stats.in_flight == 1
        response.close()  # drops the connection, as a cancelled upstream request does
        await sleep.cancelled.wait()

    stats = server.app.stats
    assert (stats.streams_started, stats.streams_completed) == (1, 0)
    assert (stats.streams_disconnected, stats.disconnected) == (1, 1)
    assert stats.in_flight == 0


async def test_a_client_leaving_mid_stream_is_counted(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    sleep = GatedSleep(passes=2)  # two tokens go out, the third waits
    server = await start_server(tokens=5, delay_ms=10, sleep=sleep)
    received = bytearray()

    async with asyncio.timeout(5):
        response = await http.post(server.url + OLLAMA, data=chat(stream=True))
        while b"tok1" not in received:
            received += await response.content.readline()
        await sleep.entered.wait()
        response.close()
        await sleep.cancelled.wait()

    async with http.get(server.url + "/_fake/stats") as answer:
        stats = await answer.json()
    assert stats["streams_disconnected"] == 1
    assert stats["streams_completed"] == 0
    assert stats["in_flight"] == 0


async def test_a_client_giving_up_on_a_hang_is_counted_apart_from_streams(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    sleep = GatedSleep()
    server = await start_server(timeout_rate=1.0, sleep=sleep)

    async with asyncio.timeout(5):
        request = asyncio.create_task(post(http, server, OPENAI, chat()))
        await sleep.entered.wait()
        request.cancel()
        await sleep.cancelled.wait()
        with contextlib.suppress(asyncio.CancelledError):
            await request

    stats = server.app.stats
    assert (stats.faults["hang"], stats.disconnected, stats.streams_disconnected) == (1, 1, 0)


async def test_a_whole_answer_in_flight_is_counted_until_it_is_written(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    sleep = GatedSleep()
    server = await start_server(first_token_ms=20, sleep=sleep)

    async with asyncio.timeout(5):
        request = asyncio.create_task(post(http, server, OPENAI, chat()))
        await sleep.entered.wait()
        async with http.get(server.url + "/_fake/stats") as answer:
            during = await answer.json()
        sleep.gate.set()
        status, _, _ = await request

    assert (during["in_flight"], during["requests"]) == (1, 1)
    assert status == 200
    assert (server.app.stats.in_flight, server.app.stats.disconnected) == (0, 0)
