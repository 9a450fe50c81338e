"""The fake backend's time to first token (base and slow draws) and its Retry-After."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson
import pytest

from chatkeep.fakellm import FakeLLMConfig
from chatkeep.fakellm.config import FaultPicker
from tests.fakellm.conftest import (
    OLLAMA,
    OPENAI,
    GatedSleep,
    RecordedSleep,
    StartServer,
    chat,
    post,
    statuses,
)

# -- Retry-After ---------------------------------------------------------------------------


@pytest.mark.parametrize(("fault", "status"), [("status_429_rate", 429), ("status_503_rate", 503)])
async def test_retry_after_is_whole_seconds_rounded_up_with_the_exact_value_alongside(
    start_server: StartServer, http: aiohttp.ClientSession, fault: str, status: int
) -> None:
    fields: dict[str, Any] = {fault: 1.0, "retry_after_seconds": 2.5}
    server = await start_server(**fields)

    got, headers, body = await post(http, server, OPENAI, chat())
    _, _, ollama_body = await post(http, server, OLLAMA, chat())

    assert got == status
    assert headers["Retry-After"] == "3"
    assert headers["Retry-After-Ms"] == "2500"
    assert orjson.loads(body)["retry_after_seconds"] == 2.5
    assert orjson.loads(ollama_body)["retry_after_seconds"] == 2.5


async def test_whole_seconds_stay_as_they_are(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    server = await start_server(status_429_rate=1.0, retry_after_seconds=2)

    _, headers, _ = await post(http, server, OPENAI, chat())

    assert (headers["Retry-After"], headers["Retry-After-Ms"]) == ("2", "2000")


async def test_no_retry_after_sends_none(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    server = await start_server(status_429_rate=1.0, retry_after_seconds=None)

    status, headers, body = await post(http, server, OPENAI, chat())

    assert status == 429
    assert "Retry-After" not in headers
    assert "Retry-After-Ms" not in headers
    assert "retry_after_seconds" not in orjson.loads(body)


async def test_503s_come_after_the_older_faults_so_they_shift_none(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    without = await start_server(fail_rate=0.3, seed=7)
    with_503 = await start_server(fail_rate=0.3, status_503_rate=0.3, seed=7)

    before = await statuses(http, without, 40)
    after = await statuses(http, with_503, 40)

    assert [s == 500 for s in after] == [s == 500 for s in before]
    assert 503 in after
    assert with_503.app.stats.faults["unavailable"] == after.count(503)


# -- time to first token --------------------------------------------------------------------


async def test_whole_answers_wait_the_first_token_and_the_pace_in_one_pause(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    sleep = RecordedSleep()
    server = await start_server(tokens=3, first_token_ms=40, delay_ms=10, sleep=sleep)

    status, _, _ = await post(http, server, OPENAI, chat())

    assert status == 200
    assert sleep.calls == [pytest.approx(0.07)]


@pytest.mark.parametrize(
    ("delay_ms", "pauses"), [(0, [0.04]), (10, [0.04, 0.01, 0.01, 0.01])], ids=["whole", "paced"]
)
async def test_streams_wait_before_the_first_token_then_keep_their_pace(
    start_server: StartServer, http: aiohttp.ClientSession, delay_ms: int, pauses: list[float]
) -> None:
    sleep = RecordedSleep()
    server = await start_server(tokens=3, first_token_ms=40, delay_ms=delay_ms, sleep=sleep)

    status, _, body = await post(http, server, OLLAMA, chat())

    assert status == 200
    assert sleep.calls == pauses
    assert len(body.splitlines()) == 4
    assert server.app.stats.streams_completed == 1


@pytest.mark.parametrize(("path", "opening"), [(OPENAI, b"data: "), (OLLAMA, b"")])
async def test_the_headers_and_the_opening_go_out_before_the_first_token_wait(
    start_server: StartServer, http: aiohttp.ClientSession, path: str, opening: bytes
) -> None:
    # A pool must wait for a real token: headers alone are not a first token.
    sleep = GatedSleep()
    server = await start_server(tokens=2, first_token_ms=500, sleep=sleep)

    async with asyncio.timeout(5):
        async with http.post(server.url + path, data=chat(stream=True)) as response:
            assert response.status == 200
            first = await response.content.readline() if opening else b""
            await sleep.entered.wait()
            assert b"tok0" not in first
            assert first.startswith(opening)
            sleep.gate.set()
            rest = await response.read()

    assert b"tok0" in rest
    assert sleep.calls == [0.5]


async def test_a_slow_fraction_waits_the_slow_first_token(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    config = FakeLLMConfig(
        tokens=1, first_token_ms=10, slow_rate=0.25, slow_first_token_ms=500, seed=3
    )
    sleep = RecordedSleep()
    server = await start_server(config, sleep=sleep)

    await statuses(http, server, 40)

    picker = FaultPicker(config)
    assert sleep.calls == [picker.first_token_wait()[0] for _ in range(40)]
    assert set(sleep.calls) == {0.01, 0.5}
    assert server.app.stats.slow == sleep.calls.count(0.5)


async def test_slowness_and_faults_are_drawn_apart(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    # Adding slowness must not move the faults of a seeded run, nor faults the slowness.
    faults_only = await start_server(fail_rate=0.3, seed=7)
    slow_only_sleep, both_sleep = RecordedSleep(), RecordedSleep()
    slow: dict[str, Any] = {
        "first_token_ms": 1,
        "slow_rate": 0.5,
        "slow_first_token_ms": 100,
        "seed": 7,
    }
    slow_only = await start_server(sleep=slow_only_sleep, **slow)
    both = await start_server(fail_rate=0.3, sleep=both_sleep, **slow)

    plain = await statuses(http, faults_only, 30)
    await statuses(http, slow_only, 30)
    mixed = await statuses(http, both, 30)

    assert mixed == plain
    # Every answered request waits (0.001 or 0.1 s); the 500s skip their wait, not their draw.
    answered = [slow_only_sleep.calls[i] for i, status in enumerate(mixed) if status == 200]
    assert both_sleep.calls == answered
    assert both.app.stats.slow == both_sleep.calls.count(0.1)
    assert 0 < both.app.stats.slow < slow_only.app.stats.slow
