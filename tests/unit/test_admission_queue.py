"""Admission: bounded in-flight and queued generations, priority order, 503 beyond."""

from __future__ import annotations

import asyncio

import pytest

from chatkeep.admission.queue import AdmissionQueue
from chatkeep.errors import Overloaded


async def test_full_queue_refuses_at_once_with_retry_after() -> None:
    queue = AdmissionQueue(max_inflight=1, max_queued=1, retry_after=3)
    await queue.acquire()
    waiter = asyncio.create_task(queue.acquire())
    await asyncio.sleep(0)
    assert queue.queued == 1
    with pytest.raises(Overloaded) as refused:
        await queue.acquire()
    assert refused.value.retry_after == 3 and queue.rejected == 1
    queue.release()
    await asyncio.wait_for(waiter, 1)
    assert queue.inflight == 1 and queue.queued == 0
    queue.release()
    assert queue.inflight == 0


async def test_lower_priority_number_goes_first_fifo_within() -> None:
    queue = AdmissionQueue(max_inflight=1, max_queued=10)
    await queue.acquire()
    order: list[str] = []

    async def wait(name: str, priority: int) -> None:
        await queue.acquire(priority)
        order.append(name)

    tasks = [
        asyncio.create_task(wait(name, priority))
        for name, priority in [("low1", 5), ("high", 0), ("low2", 5), ("mid", 2)]
    ]
    await asyncio.sleep(0)
    for _ in tasks:
        queue.release()
        await asyncio.sleep(0)
    await asyncio.wait_for(asyncio.gather(*tasks), 1)
    assert order == ["high", "mid", "low1", "low2"]


async def test_cancelled_waiter_leaves_the_line() -> None:
    queue = AdmissionQueue(max_inflight=1, max_queued=1)
    await queue.acquire()
    waiter = asyncio.create_task(queue.acquire())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert queue.queued == 0
    queue.release()
    assert queue.inflight == 0
    await queue.acquire()  # the slot is free again
    assert queue.inflight == 1


async def test_gate_refuses_and_counts() -> None:
    queue = AdmissionQueue(max_inflight=5, max_queued=5)

    def shed() -> None:
        raise Overloaded("memory", retry_after=5)

    queue.gate = shed
    with pytest.raises(Overloaded):
        await queue.acquire()
    assert queue.rejected == 1 and queue.inflight == 0


async def test_closed_queue_refuses_waiters_and_later_acquires_but_takes_slots_back() -> None:
    queue = AdmissionQueue(max_inflight=1, max_queued=4)
    await queue.acquire()
    waiter = asyncio.create_task(queue.acquire())
    await asyncio.sleep(0)
    assert queue.queued == 1
    queue.close(lambda: Overloaded("stopping"))
    with pytest.raises(Overloaded, match="stopping"):
        await waiter
    with pytest.raises(Overloaded, match="stopping"):
        await queue.acquire()
    queue.release()
    assert queue.inflight == 0 and queue.queued == 0 and queue.rejected == 2
