"""Changing a running fake backend (``/_fake/config``), its down mode and its counters."""

from __future__ import annotations

import dataclasses
from typing import Any

import aiohttp
import orjson
import pytest

from chatkeep.fakellm import FakeLLMConfig, FakeLLMServer
from tests.fakellm.conftest import OLLAMA, OPENAI, StartServer, chat, post, statuses


async def change(
    http: aiohttp.ClientSession, server: FakeLLMServer, body: bytes
) -> tuple[int, Any]:
    async with http.post(server.url + "/_fake/config", data=body) as response:
        return response.status, orjson.loads(await response.read())


async def get_json(http: aiohttp.ClientSession, server: FakeLLMServer, path: str) -> Any:
    async with http.get(server.url + path) as response:
        assert response.status == 200
        return await response.json()


# -- /_fake/config --------------------------------------------------------------------------


async def test_a_change_applies_from_the_next_request_and_can_be_undone(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    server = await start_server()

    before = await statuses(http, server, 1)
    status, config = await change(http, server, b'{"fail_rate": 1.0}')
    failing = await statuses(http, server, 2)
    await change(http, server, b'{"fail_rate": 0}')

    assert status == 200
    assert config["fail_rate"] == 1.0
    assert (await get_json(http, server, "/_fake/config"))["fail_rate"] == 0.0
    assert (before, failing, await statuses(http, server, 1)) == ([200], [500, 500], [200])


async def test_a_rate_limit_with_its_retry_after_is_set_at_run_time(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    server = await start_server()

    await change(http, server, b'{"status_429_rate": 1.0, "retry_after_seconds": 2}')
    status, headers, _ = await post(http, server, OPENAI, chat())

    assert (status, headers["Retry-After"]) == (429, "2")


async def test_values_are_read_as_their_field_types(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    server = await start_server(cut_after=1)
    body = {
        "models": ["a", "b"],
        "tokens": 2,
        "delay_ms": 0,
        "cut_after": None,
        "retry_after_seconds": None,
        "echo": False,
    }

    status, config = await change(http, server, orjson.dumps(body))
    _, _, answer = await post(http, server, OPENAI, chat())
    listing = await get_json(http, server, "/v1/models")

    assert status == 200
    assert server.app.config == dataclasses.replace(
        FakeLLMConfig(tokens=2), models=("a", "b"), retry_after_seconds=None
    )
    assert config == {**config, "models": ["a", "b"], "cut_after": None}
    assert orjson.loads(answer)["choices"][0]["message"]["content"] == "tok0 tok1"
    assert [model["id"] for model in listing["data"]] == ["a", "b"]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"{nope", "not JSON"),
        (b"[1]", "JSON object"),
        (b'{"fail_rat": 1}', "unknown fields ['fail_rat']"),
        (b'{"fail_rate": "high"}', "fail_rate must be a number"),
        (b'{"down": 1}', "down must be a boolean"),
        (b'{"tokens": true}', "tokens must be an integer"),
        (b'{"tokens": 1.5}', "tokens must be an integer"),
        (b'{"models": []}', "models must be a non-empty list of strings"),
        (b'{"fail_rate": 0.6, "status_429_rate": 0.6}', "add up to at most 1"),
        (b'{"slow_rate": 2}', "slow_rate must be in [0, 1]"),
        (b'{"retry_after_seconds": -1}', "not negative"),
    ],
)
async def test_a_bad_change_is_refused_whole(
    start_server: StartServer, http: aiohttp.ClientSession, body: bytes, expected: str
) -> None:
    server = await start_server(fail_rate=0.1, tokens=3)
    config = server.app.config

    status, answer = await change(http, server, body)

    assert status == 400
    assert expected in answer["error"]["message"]
    assert server.app.config is config


async def test_a_new_seed_restarts_the_fault_script(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    fresh = await start_server(fail_rate=0.5, seed=9)
    changed = await start_server(fail_rate=0.5, seed=1)

    await statuses(http, changed, 7)
    await change(http, changed, b'{"seed": 9}')

    assert await statuses(http, changed, 20) == await statuses(http, fresh, 20)


async def test_new_rates_go_on_from_where_the_draws_were(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    steady = await start_server(fail_rate=0.5, seed=4)
    changed = await start_server(fail_rate=0.5, seed=4)

    expected = await statuses(http, steady, 20)
    first = await statuses(http, changed, 10)
    await change(http, changed, b'{"status_429_rate": 0.0, "tokens": 5}')

    assert first + await statuses(http, changed, 10) == expected


async def test_a_change_in_process_works_like_one_over_http(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    server = await start_server()

    server.app.configure(dataclasses.replace(server.app.config, status_503_rate=1.0))

    assert await statuses(http, server, 1) == [503]


# -- down -----------------------------------------------------------------------------------


async def test_down_answers_503_to_every_route_but_the_control_ones(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    server = await start_server(down=True, retry_after_seconds=3)

    answers = []
    for method, path in [("GET", "/v1/models"), ("GET", "/"), ("GET", "/nope"), ("POST", OPENAI)]:
        async with http.request(method, server.url + path, data=chat()) as response:
            answers.append((response.status, response.headers.get("Retry-After")))
    async with http.get(server.url + "/api/tags") as response:
        ollama = (response.status, await response.json())
    stats = await get_json(http, server, "/_fake/stats")

    assert answers == [(503, "3")] * 4
    assert ollama == (503, {"error": "backend is down", "retry_after_seconds": 3.0})
    assert stats["faults"]["down"] == 5
    assert stats["requests"] == 5
    assert stats["chat_requests"] == 0


async def test_a_backend_comes_back_up(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    server = await start_server()

    await change(http, server, b'{"down": true}')
    down = await statuses(http, server, 1)
    await change(http, server, b'{"down": false}')

    assert (down, await statuses(http, server, 1)) == ([503], [200])


# -- /_fake/stats ---------------------------------------------------------------------------


async def test_stats_count_requests_faults_and_streams_but_not_control_calls(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    server = await start_server(tokens=3)

    await post(http, server, OPENAI, chat(stream=True))
    await post(http, server, OLLAMA, chat(stream=True))
    await post(http, server, OPENAI, b"{bad")
    await change(http, server, b'{"status_429_rate": 1.0}')
    await post(http, server, OPENAI, chat())
    await get_json(http, server, "/_fake/config")
    stats = await get_json(http, server, "/_fake/stats")

    assert stats == {
        "requests": 4,
        "in_flight": 0,
        "chat_requests": 3,
        "slow": 0,
        "streams_started": 2,
        "streams_completed": 2,
        "streams_cut": 0,
        "streams_disconnected": 0,
        "disconnected": 0,
        "faults": {"fail": 0, "rate_limit": 1, "hang": 0, "unavailable": 0, "down": 0},
    }
    assert server.app.counts == {"none": 2, "rate_limit": 1}


async def test_a_cut_stream_is_counted_as_cut_not_completed(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    server = await start_server(tokens=3, cut_after=1)

    with pytest.raises(aiohttp.ClientPayloadError):
        await post(http, server, OPENAI, chat(stream=True))

    stats = server.app.stats
    assert (stats.streams_started, stats.streams_cut, stats.streams_completed) == (1, 1, 0)
    assert stats.streams_disconnected == 0


async def test_a_reset_answers_the_counters_and_zeroes_them(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    server = await start_server(fail_rate=1.0)
    await statuses(http, server, 2)

    async with http.post(server.url + "/_fake/stats/reset") as response:
        before = await response.json()
    after = await get_json(http, server, "/_fake/stats")

    assert (before["requests"], before["faults"]["fail"]) == (2, 2)
    assert (after["requests"], after["faults"]["fail"], after["chat_requests"]) == (0, 0, 0)


async def test_unknown_control_paths_and_methods_are_not_traffic(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    server = await start_server(down=True)

    async with http.get(server.url + "/_fake/nope") as missing:
        assert missing.status == 404
    async with http.delete(server.url + "/_fake/config") as wrong_method:
        assert wrong_method.status == 405

    assert server.app.stats.requests == 0
