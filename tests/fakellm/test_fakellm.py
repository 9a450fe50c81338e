"""The fake backend: both wire formats, streamed and whole, and every fault it injects."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
import typer
from typer.testing import CliRunner

from chatkeep.fakellm import FakeLLMConfig, FakeLLMServer, Fault
from chatkeep.fakellm.cli import register, serve_fake_llm
from chatkeep.fakellm.config import FaultPicker
from tests.fakellm.conftest import (
    OLLAMA,
    OPENAI,
    RecordedSleep,
    StartServer,
    chat,
    post,
    sse_events,
    statuses,
)

# -- OpenAI ---------------------------------------------------------------------------------


async def test_openai_whole_answer_has_usage(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    server = await start_server(tokens=3)

    status, headers, body = await post(http, server, OPENAI, chat())

    answer = orjson.loads(body)
    assert status == 200
    assert headers["Content-Type"].startswith("application/json")
    assert answer["object"] == "chat.completion"
    assert answer["model"] == "m"
    assert answer["choices"][0]["message"] == {"role": "assistant", "content": "tok0 tok1 tok2"}
    assert answer["choices"][0]["finish_reason"] == "stop"
    assert answer["usage"] == {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}


async def test_openai_stream_is_sse_ending_with_done(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    server = await start_server(tokens=2)

    status, headers, body = await post(http, server, OPENAI, chat(stream=True))

    events = sse_events(body)
    assert status == 200
    assert headers["Content-Type"].startswith("text/event-stream")
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [e["choices"][0]["delta"].get("content") for e in events[1:3]] == ["tok0 ", "tok1"]
    assert events[3]["choices"][0]["finish_reason"] == "stop"
    assert events[4:] == ["[DONE]"]
    assert all("usage" not in e for e in events[:-1])


async def test_openai_stream_sends_a_usage_chunk_when_asked(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    server = await start_server(tokens=2)
    body = chat(stream=True, stream_options={"include_usage": True})

    _, _, answer = await post(http, server, OPENAI, body)

    *chunks, usage_chunk, done = sse_events(answer)
    assert done == "[DONE]"
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    assert all(chunk["usage"] is None for chunk in chunks)


async def test_openai_models_are_listed(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    server = await start_server(models=("a", "b"))

    async with http.get(server.url + "/v1/models") as response:
        listing = await response.json()

    assert [m["id"] for m in listing["data"]] == ["a", "b"]


# -- Ollama ---------------------------------------------------------------------------------


async def test_ollama_streams_ndjson_by_default(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    server = await start_server(tokens=2)

    status, headers, body = await post(http, server, OLLAMA, chat())

    lines = [orjson.loads(line) for line in body.splitlines()]
    assert status == 200
    assert headers["Content-Type"].startswith("application/x-ndjson")
    assert [line["message"]["content"] for line in lines] == ["tok0 ", "tok1", ""]
    assert [line["done"] for line in lines] == [False, False, True]
    assert lines[-1]["done_reason"] == "stop"
    assert (lines[-1]["prompt_eval_count"], lines[-1]["eval_count"]) == (3, 2)


async def test_ollama_whole_answer(start_server: StartServer, http: aiohttp.ClientSession) -> None:
    server = await start_server(tokens=2)

    _, _, body = await post(http, server, OLLAMA, chat(stream=False))

    answer = orjson.loads(body)
    assert answer["message"] == {"role": "assistant", "content": "tok0 tok1"}
    assert answer["done"] is True
    assert (answer["prompt_eval_count"], answer["eval_count"]) == (3, 2)


async def test_ollama_tags_and_root(start_server: StartServer, http: aiohttp.ClientSession) -> None:
    server = await start_server()

    async with http.get(server.url + "/api/tags") as response:
        tags = await response.json()
    async with http.get(server.url + "/") as response:
        root = await response.text()

    assert [m["name"] for m in tags["models"]] == ["fake"]
    assert "running" in root


# -- replies ----------------------------------------------------------------------------------


async def test_echo_replies_cycle_the_last_user_words(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    server = await start_server(tokens=5, echo=True)

    _, _, first = await post(http, server, OPENAI, chat())
    _, _, again = await post(http, server, OPENAI, chat())

    text = orjson.loads(first)["choices"][0]["message"]["content"]
    assert text == "hello there hello there hello"
    assert orjson.loads(again)["choices"][0]["message"]["content"] == text


async def test_delays_pace_each_token_and_whole_answers(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    sleep = RecordedSleep()
    server = await start_server(tokens=3, delay_ms=20, sleep=sleep)

    _, _, streamed = await post(http, server, OLLAMA, chat())
    assert sleep.calls == [0.02, 0.02, 0.02]
    sleep.calls.clear()
    await post(http, server, OPENAI, chat())

    assert sleep.calls == [pytest.approx(0.06)]
    assert len(streamed.splitlines()) == 4


# -- faults ---------------------------------------------------------------------------------


async def test_fail_rate_is_deterministic_by_seed(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    config = FakeLLMConfig(fail_rate=0.3, seed=7)
    first = await start_server(config)
    second = await start_server(config)

    seen = await statuses(http, first, 30)

    assert seen == await statuses(http, second, 30)
    picker = FaultPicker(config)
    assert seen == [500 if picker.next() is Fault.FAIL else 200 for _ in range(30)]
    assert {200, 500} <= set(seen)
    assert first.app.counts["fail"] == seen.count(500)


async def test_failures_answer_500_in_each_wire_format(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    server = await start_server(fail_rate=1.0)

    _, _, openai_body = await post(http, server, OPENAI, chat())
    status, _, ollama_body = await post(http, server, OLLAMA, chat())

    assert status == 500
    assert orjson.loads(openai_body)["error"]["message"] == "injected failure"
    assert orjson.loads(ollama_body) == {"error": "injected failure"}


async def test_rate_limits_answer_429_with_retry_after(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    server = await start_server(status_429_rate=1.0)

    status, headers, _ = await post(http, server, OPENAI, chat(stream=True))

    assert status == 429
    assert headers["Retry-After"] == "1"


async def test_a_hang_is_bounded_by_hang_seconds(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    sleep = RecordedSleep()
    server = await start_server(timeout_rate=1.0, hang_seconds=12.5, sleep=sleep)

    status, _, _ = await post(http, server, OPENAI, chat())

    assert status == 504
    assert sleep.calls == [12.5]


async def test_a_hang_lasts_until_the_client_gives_up(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    server = await start_server(timeout_rate=1.0, hang_seconds=30)

    with pytest.raises(TimeoutError):
        async with http.post(
            server.url + OPENAI, data=chat(), timeout=aiohttp.ClientTimeout(total=0.05)
        ):
            pass

    assert server.app.counts["hang"] == 1


@pytest.mark.parametrize("delay_ms", [0, 5], ids=["one-write", "paced"])
@pytest.mark.parametrize(
    ("path", "marker"), [(OPENAI, b"[DONE]"), (OLLAMA, b'"done":true')], ids=["openai", "ollama"]
)
async def test_cut_after_drops_the_connection_mid_stream(
    start_server: StartServer,
    http: aiohttp.ClientSession,
    path: str,
    marker: bytes,
    delay_ms: int,
) -> None:
    server = await start_server(tokens=5, cut_after=2, delay_ms=delay_ms, sleep=RecordedSleep())
    received = bytearray()

    with pytest.raises(aiohttp.ClientPayloadError):
        async with http.post(server.url + path, data=chat(stream=True)) as response:
            async for data in response.content.iter_any():
                received += data

    assert b'"tok1 "' in received
    assert b"tok2" not in received
    assert marker not in received
    assert server.app.counts["cut"] == 1


async def test_cut_after_leaves_whole_answers_alone(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    server = await start_server(tokens=3, cut_after=0)

    status, _, body = await post(http, server, OPENAI, chat())

    assert status == 200
    assert orjson.loads(body)["choices"][0]["message"]["content"] == "tok0 tok1 tok2"


# -- bounds and bad requests ----------------------------------------------------------------


async def chunked(data: bytes) -> AsyncIterator[bytes]:
    yield data


@pytest.mark.parametrize("send_length", [True, False], ids=["content-length", "chunked"])
async def test_bodies_over_the_limit_get_413(
    start_server: StartServer, http: aiohttp.ClientSession, send_length: bool
) -> None:
    server = await start_server(max_body_bytes=1024)
    big = chat(padding="x" * 2048)

    async with http.post(
        server.url + OPENAI, data=big if send_length else chunked(big)
    ) as response:
        assert response.status == 413


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"{not json", "not JSON"),
        (b"[]", "JSON object"),
        (orjson.dumps({"model": "m"}), "messages"),
        (orjson.dumps({"messages": []}), "model"),
    ],
)
async def test_malformed_requests_get_400(
    start_server: StartServer, http: aiohttp.ClientSession, body: bytes, expected: str
) -> None:
    server = await start_server(fail_rate=1.0)

    status, _, answer = await post(http, server, OPENAI, body)

    assert status == 400
    assert expected in orjson.loads(answer)["error"]["message"]
    assert server.app.counts["fail"] == 0  # bad requests draw no fault


async def test_unknown_paths_and_methods(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    server = await start_server()

    async with http.get(server.url + "/nope") as missing:
        assert missing.status == 404
    async with http.get(server.url + OPENAI) as wrong_method:
        assert wrong_method.status == 405


@pytest.mark.parametrize(
    "fields",
    [
        {"tokens": 0},
        {"delay_ms": -1},
        {"fail_rate": 1.5},
        {"fail_rate": 0.6, "timeout_rate": 0.6},
        {"cut_after": -1},
        {"max_body_bytes": 0},
        {"status_503_rate": 0.5, "fail_rate": 0.6},
        {"slow_rate": -0.1},
        {"first_token_ms": -1},
        {"slow_first_token_ms": float("inf")},
        {"retry_after_seconds": float("nan")},
    ],
)
def test_config_rejects_nonsense(fields: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        FakeLLMConfig(**fields)


async def test_the_server_closes_twice_and_names_its_url(start_server: StartServer) -> None:
    server = await start_server()

    await server.aclose()
    await server.aclose()

    assert server.url == f"http://127.0.0.1:{server.port}"
    assert server.port > 0


# -- command line ---------------------------------------------------------------------------


def cli() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """A stand-in for chatkeep's own command line."""

    register(app)
    return app


def test_the_command_is_registered_with_its_options() -> None:
    result = CliRunner().invoke(cli(), ["fake-llm", "--help"])

    assert result.exit_code == 0
    for option in (
        "--port",
        "--tokens",
        "--delay-ms",
        "--fail-rate",
        "--cut-after",
        "--first-token-ms",
        "--slow-rate",
        "--slow-first-token-ms",
        "--status-503-rate",
        "--retry-after-seconds",
        "--no-retry-after",
        "--down",
    ):
        assert option in result.output
    assert "/_fake/config" in result.output


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            "--first-token-ms 20 --slow-rate 0.05 --slow-first-token-ms 800 "
            "--status-503-rate 0.1 --retry-after-seconds 2.5 --down",
            FakeLLMConfig(
                first_token_ms=20,
                slow_rate=0.05,
                slow_first_token_ms=800,
                status_503_rate=0.1,
                retry_after_seconds=2.5,
                down=True,
            ),
        ),
        ("--no-retry-after", FakeLLMConfig(retry_after_seconds=None)),
        ("", FakeLLMConfig()),
    ],
    ids=["latency-503-down", "no-retry-after", "defaults"],
)
def test_the_command_builds_its_config_from_the_options(
    monkeypatch: pytest.MonkeyPatch, args: str, expected: FakeLLMConfig
) -> None:
    served: list[FakeLLMConfig] = []

    async def record(config: FakeLLMConfig, *_: Any) -> None:
        served.append(config)

    monkeypatch.setattr("chatkeep.fakellm.cli.serve_fake_llm", record)

    result = CliRunner().invoke(cli(), ["fake-llm", *args.split()])

    assert result.exit_code == 0, result.output
    assert served == [expected]


def test_the_command_refuses_bad_rates() -> None:
    result = CliRunner().invoke(cli(), ["fake-llm", "--fail-rate", "2"])

    assert result.exit_code == 2
    assert "fault rates" in result.output


async def test_serve_reports_its_url_and_stops_when_told(http: aiohttp.ClientSession) -> None:
    stop = asyncio.Event()
    ready: asyncio.Queue[FakeLLMServer] = asyncio.Queue()
    serving = asyncio.create_task(
        serve_fake_llm(FakeLLMConfig(tokens=1), "127.0.0.1", 0, ready.put_nowait, stop)
    )

    async with asyncio.timeout(10):
        server = await ready.get()
        async with http.post(server.url + OPENAI, data=chat()) as response:
            answer = await response.json()
        stop.set()
        await serving

    assert answer["choices"][0]["message"]["content"] == "tok0"
