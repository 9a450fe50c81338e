"""Each owner's share of the admission line: a flood is refused (429) past its share while
other owners still get in line and are admitted; priorities still order the line."""

from __future__ import annotations

import asyncio

import pytest

from chatkeep.admission.queue import AdmissionQueue
from chatkeep.errors import Overloaded, RateLimited


async def waiting(
    queue: AdmissionQueue, owner: str | None, priority: int = 0
) -> asyncio.Task[None]:
    """A task waiting in line (asserted to be waiting, not admitted)."""
    task = asyncio.create_task(queue.acquire(priority, owner))
    await asyncio.sleep(0)
    assert not task.done()
    return task


async def refused(queue: AdmissionQueue, owner: str) -> Overloaded:
    """The refusal of one more request of ``owner`` (a request let in line fails the test)."""
    with pytest.raises(Overloaded) as refusal:
        # Bounded: a request let in line would wait forever; a timeout is not a refusal.
        await asyncio.wait_for(queue.acquire(0, owner), 1)
    return refusal.value


async def admit_all(queue: AdmissionQueue, tasks: list[asyncio.Task[None]]) -> list[int]:
    """Release one slot per task; the indexes of ``tasks`` in the order they got one."""
    order: list[int] = []
    for _ in tasks:
        queue.release()
        await asyncio.sleep(0)
        order.extend(i for i, t in enumerate(tasks) if t.done() and i not in order)
    await asyncio.wait_for(asyncio.gather(*tasks), 1)
    return order


async def test_a_flood_is_refused_past_its_share_while_another_owner_gets_in() -> None:
    queue = AdmissionQueue(max_inflight=1, max_queued=10, retry_after=2, max_queued_per_owner=2)
    await queue.acquire(0, "flood")  # running
    flood = [await waiting(queue, "flood") for _ in range(2)]
    refusal = await refused(queue, "flood")
    assert isinstance(refusal, RateLimited)
    assert refusal.status_code == 429 and refusal.retry_after == 2
    assert queue.refused_per_owner == 1 and queue.rejected == 0
    other = await waiting(queue, "other")
    assert queue.owners_waiting == 2 and queue.waiting("flood") == 2
    order = await admit_all(queue, [*flood, other])
    assert order == [0, 1, 2]  # same priority: first come, first served
    assert queue.owners_waiting == 0
    queue.release()
    assert queue.inflight == 0


async def test_an_owner_admitted_gets_its_share_back() -> None:
    queue = AdmissionQueue(max_inflight=1, max_queued=10, max_queued_per_owner=1)
    await queue.acquire(0, "a")
    first = await waiting(queue, "a")
    assert isinstance(await refused(queue, "a"), RateLimited)
    queue.release()
    await asyncio.wait_for(first, 1)  # running now: no longer in its owner's share
    second = await waiting(queue, "a")
    await admit_all(queue, [second])
    queue.release()
    assert queue.inflight == 0 and queue.owners_waiting == 0


async def test_priorities_order_the_line_across_owners() -> None:
    queue = AdmissionQueue(max_inflight=1, max_queued=10, max_queued_per_owner=3)
    await queue.acquire(0, "flood")
    tasks = [
        await waiting(queue, "flood", priority=5),
        await waiting(queue, "flood", priority=5),
        await waiting(queue, "urgent", priority=0),
        await waiting(queue, "flood", priority=5),
        await waiting(queue, "mid", priority=2),
    ]
    assert await admit_all(queue, tasks) == [2, 4, 0, 1, 3]
    queue.release()


async def test_a_cancelled_waiter_leaves_its_owners_share() -> None:
    queue = AdmissionQueue(max_inflight=1, max_queued=10, max_queued_per_owner=1)
    await queue.acquire(0, "a")
    task = await waiting(queue, "a")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert queue.owners_waiting == 0
    again = await waiting(queue, "a")
    await admit_all(queue, [again])
    queue.release()


async def test_a_closed_queue_forgets_every_share() -> None:
    queue = AdmissionQueue(max_inflight=1, max_queued=10, max_queued_per_owner=2)
    await queue.acquire(0, "a")
    tasks = [await waiting(queue, "a"), await waiting(queue, "b")]
    queue.close(lambda: Overloaded("stopping"))
    for task in tasks:
        with pytest.raises(Overloaded, match="stopping"):
            await task
    assert queue.owners_waiting == 0
    queue.release()


async def test_the_whole_line_is_still_bounded_and_requests_without_owner_have_no_share() -> None:
    queue = AdmissionQueue(max_inflight=1, max_queued=3, max_queued_per_owner=1)
    await queue.acquire()
    tasks = [await waiting(queue, None) for _ in range(2)]
    tasks.append(await waiting(queue, "a"))
    refusal = await refused(queue, "b")  # the line is full: 503, not anyone's share
    assert not isinstance(refusal, RateLimited) and queue.rejected == 1
    await admit_all(queue, tasks)
    queue.release()
