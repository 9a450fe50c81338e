"""The logic of the gateway boards' benchmark parts: the ladder, the frontier, the streams."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import burst
import frontier
import frontier_load
import streams
import streams_client
import streams_report
from streams_client import StreamTrace, is_end, token_text


def step(rate: float, p99: float | None, errors: dict[str, int] | None = None) -> dict[str, Any]:
    return {"offered_rps": rate, "errors": errors or {}, "latency_ms": {"p50": 0.1, "p99": p99}}


def test_the_ladder_climbs_by_its_factor_up_to_the_ceiling() -> None:
    assert frontier.ladder(100, 2, 800) == [100, 200, 400, 800]
    assert frontier.ladder(100, 2, 799) == [100, 200, 400]
    with pytest.raises(ValueError):
        frontier.ladder(100, 1, 800)


def test_a_frontier_is_the_top_of_the_first_run_of_steps_under_its_bound() -> None:
    steps = [step(400, 0.8), step(100, 1.5), step(200, 0.7), step(800, 1.2), step(1600, 0.9)]
    # 100/s was over 1 ms (a slow low rate), 200 and 400 under; 1600 is under again after
    # 800 was not: luck, not capacity.
    assert frontier.frontier(steps, 1.0) == 400
    assert frontier.frontier(steps, 5.0) == 1600
    assert frontier.frontier([step(100, 2.0), step(200, 3.0)], 1.0) is None


def test_a_ladder_ends_after_a_failure_that_follows_a_pass_or_two_in_a_row() -> None:
    assert not frontier.leaves_the_climb([step(100, 60.0)])
    assert frontier.leaves_the_climb([step(100, 60.0), step(141, 70.0)])
    assert frontier.leaves_the_climb([step(100, 60.0), step(141, 2.0), step(200, 70.0)])
    assert not frontier.leaves_the_climb([step(100, 60.0), step(141, 2.0)])


def test_a_step_with_failed_answers_is_under_no_bound() -> None:
    assert not frontier.step_passes(step(100, 0.2, {"status_503": 1}), 50.0)
    assert not frontier.step_passes(step(100, None), 50.0)


def test_a_step_is_the_median_of_its_rounds_with_every_rounds_errors() -> None:
    rounds = [
        {"offered_rps": 100, "achieved_rps": 99, "errors": {}, "latency_ms": {"p99": 1.0}},
        {
            "offered_rps": 100,
            "achieved_rps": 100,
            "errors": {"timeout": 1},
            "latency_ms": {"p99": 9.0},
        },
        {"offered_rps": 100, "achieved_rps": 98, "errors": {}, "latency_ms": {"p99": 2.0}},
    ]
    median = frontier.median_step(rounds)
    assert median["latency_ms"]["p99"] == 2.0
    assert median["achieved_rps"] == 99
    assert median["errors"] == {"timeout": 1}


def test_lanes_share_one_schedule_at_the_offered_rate() -> None:
    due = sorted(
        frontier_load.due_time(0.0, lane, k, 4, 100.0) for lane in range(4) for k in range(3)
    )
    assert due == pytest.approx([n / 100 for n in range(12)])


def test_percentiles_are_nearest_rank_in_milliseconds() -> None:
    values = [n / 1000 for n in range(1, 101)]
    assert frontier_load.percentile_ms(values, 0.99) == 99.0
    assert frontier_load.percentile_ms(values, 1.0) == 100.0
    assert frontier_load.percentile_ms([], 0.5) is None


def trace(sent: float, *arrivals: float, **fields: Any) -> StreamTrace:
    return StreamTrace(sent=sent, arrivals=list(arrivals), **fields)


def test_streams_count_lost_and_late_tokens() -> None:
    traces = [
        trace(0.0, 0.05, 0.10, 0.15),
        trace(0.0, 0.06, 0.30, 0.35),  # a 240 ms gap: late past 2 x 50 ms
        trace(0.0, 0.07, failure="cut"),  # two tokens never came
    ]
    found = streams.summarize(traces, tokens=3, gap_seconds=0.05)
    assert found["tokens_lost"] == 2
    assert found["late_gaps"] == 1
    assert found["failed"] == {"cut": 1}
    assert found["ttft_ms"]["p50"] == 60.0
    assert found["longest_gap_ms"]["max"] == 240.0
    assert not found["sustained"]
    assert streams.summarize(traces[:1], tokens=3, gap_seconds=0.05)["sustained"]


def test_streams_sustained_is_the_most_tried_with_nothing_wrong() -> None:
    runs = [
        {"streams": 256, "target": "direct", "sustained": True},
        {"streams": 1000, "target": "direct", "sustained": True},
        {"streams": 256, "target": "durable", "sustained": True},
        {"streams": 1000, "target": "durable", "sustained": False},
        {"streams": 256, "target": "passthrough", "sustained": False},
    ]
    assert streams_report.sustained({"runs": runs}) == {
        "direct": 1000,
        "durable": 256,
        "passthrough": None,
    }


def test_token_events_of_both_wire_formats() -> None:
    openai = b'data: {"choices":[{"index":0,"delta":{"content":"tok3 "},"finish_reason":null}]}'
    role = b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}'
    assert token_text(openai, durable=False) == "tok3 "
    assert token_text(role, durable=False) is None
    assert token_text(b'id: m:2\nevent: delta\ndata: {"text":"tok1 tok2 "}', durable=True) == (
        "tok1 tok2 "
    )
    assert token_text(b"event: message\ndata: {}", durable=True) is None
    assert is_end(b"data: [DONE]", durable=False)
    assert is_end(b"id: m:5\nevent: done\ndata: {}", durable=True)
    assert not is_end(openai, durable=False)


def test_a_phase_reads_first_median_peak_and_last() -> None:
    assert burst.phase([3, 9, 4, 5]) == {"first": 3, "median": 4, "peak": 9, "last": 5}
    assert burst.phase([])["peak"] is None


def chunked(*pieces: bytes) -> bytes:
    body = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces)
    head = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    return head + body + b"0\r\n\r\n"


async def read(data: bytes, *, durable: bool, tokens: int) -> StreamTrace:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    found = StreamTrace()
    await streams_client.read_reply(reader, found, durable, tokens)
    return found


async def test_a_reply_is_read_across_chunks_and_events_split_anywhere() -> None:
    events = b"".join(
        b'data: {"choices":[{"delta":{"content":"tok%d "}}]}\n\n' % n for n in range(3)
    )
    events += b"data: [DONE]\n\n"
    # Chunk boundaries fall inside events: the client must not care.
    pieces = [events[start : start + 17] for start in range(0, len(events), 17)]
    found = await read(chunked(*pieces), durable=False, tokens=3)
    assert (len(found.arrivals), found.wrong, found.ended, found.failure) == (3, 0, True, None)


async def test_a_durable_reply_may_carry_several_tokens_in_one_event() -> None:
    data = chunked(
        b"event: message\ndata: {}\n\n",
        b'event: delta\ndata: {"text":"tok0 "}\n\n',
        b'event: delta\ndata: {"text":"tok1 tok2 tok9 "}\n\n',
        b"event: done\ndata: {}\n\n",
    )
    found = await read(data, durable=True, tokens=4)
    assert (len(found.arrivals), found.wrong, found.ended) == (3, 1, True)


async def test_a_reply_cut_before_its_end_is_a_failure() -> None:
    found = await read(chunked(b'event: delta\ndata: {"text":"tok0"}\n\n'), durable=True, tokens=2)
    assert found.failure == "cut" and len(found.arrivals) == 1
