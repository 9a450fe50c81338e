"""Reply streams: subscribers at their own pace, slow ones cut off, resume by event id."""

from __future__ import annotations

import asyncio
import json

import pytest

from chatkeep.domain.outcome import ReplyOutcome
from chatkeep.domain.records import Message, MessageStatus
from chatkeep.streaming.memory_hub import MemoryReplyHub
from chatkeep.streaming.reply_stream import (
    PING,
    ReplyStream,
    ReplyTooLong,
    SlowConsumer,
    StreamEvent,
    TooManySubscribers,
)


def _message(content: str = "", status: MessageStatus = "complete") -> Message:
    return Message(
        id="m",
        conversation_id="c",
        seq=2,
        role="assistant",
        content=content,
        status=status,
        created_at=0.0,
    )


DONE = ReplyOutcome(_message())


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _stream(
    clock: FakeClock | None = None, max_bytes: int = 1 << 20, conversation: str = "c"
) -> ReplyStream:
    return ReplyStream(
        reply_id="r1",
        conversation_id=conversation,
        owner_id="o",
        message_event=b'{"id": "u"}',
        max_bytes=max_bytes,
        clock=clock or FakeClock(),
    )


def _text(events: list[StreamEvent]) -> str:
    return "".join(json.loads(e.data)["text"] for e in events if e.event == "delta")


async def _collect(stream: ReplyStream, **kwargs: object) -> list[StreamEvent]:
    return [event async for event in stream.subscribe(**kwargs)]  # type: ignore[arg-type]


async def test_subscriber_gets_message_deltas_and_done_in_order() -> None:
    stream = _stream()
    reader = asyncio.create_task(_collect(stream))
    await asyncio.sleep(0)
    for piece in ("a", "b", "c"):
        stream.publish(piece)
        await asyncio.sleep(0)
    stream.finish(DONE)
    events = await asyncio.wait_for(reader, 1)
    assert events[0].event == "message" and events[-1].event == "done"
    assert _text(events) == "abc"
    assert [e.id for e in events] == ["r1:0", "r1:1", "r1:2", "r1:3", "r1:4"]


async def test_late_subscriber_gets_missed_text_coalesced() -> None:
    stream = _stream()
    for piece in ("a", "b", "c"):
        stream.publish(piece)
    stream.finish(DONE)
    events = await _collect(stream)
    assert [e.event for e in events] == ["message", "delta", "done"]
    assert _text(events) == "abc" and events[1].id == "r1:3"


async def test_slow_subscriber_cut_off_while_fast_one_keeps_going() -> None:
    stream = _stream()
    fast_events: list[StreamEvent] = []
    fast_done = asyncio.Event()

    async def fast() -> None:
        async for event in stream.subscribe(max_lag_bytes=64):
            fast_events.append(event)
        fast_done.set()

    slow = stream.subscribe(max_lag_bytes=64).__aiter__()
    assert (await anext(slow)).event == "message"  # then it stops reading
    fast_task = asyncio.create_task(fast())
    for _ in range(20):
        stream.publish("x" * 10)
        await asyncio.sleep(0)
    stream.finish(DONE)
    await asyncio.wait_for(fast_done.wait(), 1)
    await fast_task
    assert _text(fast_events) == "x" * 200 and fast_events[-1].event == "done"
    with pytest.raises(SlowConsumer) as cut:
        await anext(slow)
    assert cut.value.last_event_id == "r1:0"  # it can resume from what it saw
    resumed = await _collect(stream, after=stream.position_of(cut.value.last_event_id))
    assert _text(resumed) == "x" * 200


async def test_resume_from_middle_and_after_end() -> None:
    stream = _stream()
    for piece in ("one ", "two ", "three"):
        stream.publish(piece)
    stream.finish(DONE)
    middle = await _collect(stream, after=stream.position_of("r1:1"))
    assert _text(middle) == "two three" and middle[0].event == "delta"
    end = await _collect(stream, after=stream.position_of("r1:3"))
    assert [e.event for e in end] == ["done"]
    foreign = await _collect(stream, after=stream.position_of("other:2"))
    assert foreign[0].event == "message"


async def test_buffer_bound_cuts_the_reply() -> None:
    stream = _stream(max_bytes=10)
    stream.publish("0123456789")
    with pytest.raises(ReplyTooLong):
        stream.publish("é")
    assert stream.text_bytes == 10 and stream.text == "0123456789"


async def test_wait_returns_the_outcome() -> None:
    stream = _stream()
    waiter = asyncio.create_task(stream.wait(within=60))
    await asyncio.sleep(0)
    stream.finish(DONE)
    assert await asyncio.wait_for(waiter, 1) is DONE


async def test_wait_is_bounded() -> None:
    stream = _stream()
    assert await stream.wait(within=0) is None
    assert not stream.finished


async def test_idle_subscriber_gets_pings() -> None:
    stream = _stream()
    events = stream.subscribe(ping_seconds=0).__aiter__()
    assert (await anext(events)).event == "message"
    assert await anext(events) is PING
    stream.finish(DONE)
    assert (await anext(events)).event == "done"


async def test_error_outcome_ends_the_stream_with_its_code_and_message() -> None:
    stream = _stream()
    stream.publish("par")
    stream.finish(ReplyOutcome(_message("par", "incomplete"), code="shutdown", reason="bye"))
    events = await _collect(stream)
    final = json.loads(events[-1].data)
    assert events[-1].event == "error"
    assert final["error"] == {"code": "shutdown", "message": "bye"}
    assert final["message"]["content"] == "par"


def test_registry_retention_count_and_reclaim_with_injected_clock() -> None:
    clock = FakeClock()
    registry = MemoryReplyHub(max_bytes=1 << 20, retention_seconds=60, max_retained=2, clock=clock)
    streams = [_stream(clock, conversation=f"c{n}") for n in range(3)]
    for stream in streams:
        registry.add(stream)
        stream.publish("abcd")
        stream.finish(DONE)
    assert registry.counts()["running"] == 3
    for stream in streams:
        registry.mark_finished(stream)
    # The count bound dropped the oldest finished stream.
    assert registry.find("o", "c0") is None and registry.find("o", "c2") is streams[2]
    assert registry.find("someone-else", "c2") is None
    clock.now += 61
    assert registry.find("o", "c2") is None  # past retention
    assert registry.reap() == 2 and registry.counts()["retained"] == 0


def test_registry_reclaim_drops_finished_streams_only() -> None:
    clock = FakeClock()
    registry = MemoryReplyHub(max_bytes=1 << 20, retention_seconds=60, max_retained=10, clock=clock)
    running = _stream(clock, conversation="run")
    registry.add(running)
    running.publish("r" * 100)
    finished = []
    for n in range(4):
        stream = _stream(clock, conversation=f"f{n}")
        registry.add(stream)
        stream.publish("f" * 100)
        stream.finish(DONE)
        registry.mark_finished(stream)
        finished.append(stream)
    total = registry.nbytes()
    assert total >= 500
    freed = registry.reclaim(0.3)
    one = finished[0].nbytes
    assert 0.3 * total <= freed <= 0.3 * total + one  # a bounded share, not everything
    assert registry.find("o", "run") is running
    assert registry.find("o", "f0") is None and registry.find("o", "f3") is finished[3]


async def test_reaper_drops_expired_streams_without_traffic() -> None:
    clock = FakeClock()
    registry = MemoryReplyHub(max_bytes=1 << 20, retention_seconds=10, max_retained=10, clock=clock)
    stream = _stream(clock)
    registry.add(stream)
    stream.finish(DONE)
    registry.mark_finished(stream)
    ticks: list[float] = []
    tick = asyncio.Event()

    async def fake_sleep(seconds: float) -> None:
        ticks.append(seconds)
        clock.now += seconds
        tick.set()
        await asyncio.sleep(0)

    reaper = asyncio.create_task(registry.reap_forever(11, sleep=fake_sleep))
    await asyncio.wait_for(tick.wait(), 1)
    await asyncio.sleep(0)
    reaper.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reaper
    assert registry.counts()["retained"] == 0 and ticks[0] == 11


async def test_subscriber_count_is_bounded() -> None:
    stream = _stream()
    first = stream.subscribe(max_subscribers=1).__aiter__()
    assert (await anext(first)).event == "message"
    with pytest.raises(TooManySubscribers):
        await anext(stream.subscribe(max_subscribers=1).__aiter__())
    stream.finish(DONE)
    assert [e.event async for e in first] == ["done"]
    assert stream.subscribers == 0
    assert (await anext(stream.subscribe(max_subscribers=1).__aiter__())).event == "message"


def test_kept_json_is_sized_to_fit() -> None:
    import tracemalloc

    import orjson

    from chatkeep.serialize import compact

    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = [compact(orjson.dumps({"n": n})) for n in range(200)]
        per_item = (tracemalloc.get_traced_memory()[0] - before) / len(kept)
    finally:
        tracemalloc.stop()
    assert per_item < 200


def test_a_last_event_id_with_other_digits_resumes_from_the_start() -> None:
    stream = _stream()
    stream.publish("abc")
    assert stream.position_of("r1:1") == 1
    for foreign in ("r1:\u00b2", "r1:\u0663", "r1:", "r1:-1", "r2:1", "r1:" + "1" * 5000):
        assert stream.position_of(foreign) == -1
