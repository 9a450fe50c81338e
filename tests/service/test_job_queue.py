"""BoundedJobQueue: never blocks, skips and counts, priorities, keys, concurrency, stop.

Jobs are driven with events; every wait sits in a timeout that must not fire.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from chatkeep.service.job_queue import BoundedJobQueue

WAIT = 5.0


@pytest.fixture
async def queue() -> AsyncIterator[BoundedJobQueue]:
    jobs = BoundedJobQueue(maxsize=3, concurrency=1)
    yield jobs
    await jobs.stop()


def recorder(log: list[str], name: str) -> Callable[[], Awaitable[None]]:
    async def job() -> None:
        log.append(name)

    return job


def blocker(
    gate: asyncio.Event, started: asyncio.Event | None = None
) -> Callable[[], Awaitable[None]]:
    async def job() -> None:
        if started is not None:
            started.set()
        await gate.wait()

    return job


async def test_a_full_queue_skips_without_blocking(queue: BoundedJobQueue) -> None:
    gate = asyncio.Event()
    started = asyncio.Event()
    queue.start()
    assert queue.submit(blocker(gate, started))
    async with asyncio.timeout(WAIT):
        await started.wait()
    log: list[str] = []
    assert all(queue.submit(recorder(log, str(n))) for n in range(3))
    # submit is synchronous: refusing cannot wait, by construction.
    assert not queue.submit(recorder(log, "too many"))
    assert not queue.submit(recorder(log, "still too many"))
    stats = queue.stats()
    assert (stats["queued"], stats["running"], stats["skipped_full"]) == (3, 1, 2)
    gate.set()
    async with asyncio.timeout(WAIT):
        await queue.join()
    assert log == ["0", "1", "2"]
    assert queue.stats()["completed"] == 4


async def test_lower_priority_numbers_run_first_in_submission_order() -> None:
    jobs = BoundedJobQueue(maxsize=10, concurrency=1)
    log: list[str] = []
    for name, priority in [("c1", 5), ("a1", 0), ("b1", 1), ("a2", 0), ("c2", 5), ("z", -1)]:
        assert jobs.submit(recorder(log, name), priority=priority)
    jobs.start()  # submitted before start: they wait until now
    try:
        async with asyncio.timeout(WAIT):
            await jobs.join()
    finally:
        await jobs.stop()
    assert log == ["z", "a1", "a2", "b1", "c1", "c2"]


async def test_a_key_already_queued_or_running_is_skipped(queue: BoundedJobQueue) -> None:
    gate = asyncio.Event()
    started = asyncio.Event()
    queue.start()
    assert queue.submit(blocker(gate, started), key="conv-1")
    async with asyncio.timeout(WAIT):
        await started.wait()
    log: list[str] = []
    assert not queue.submit(recorder(log, "running twin"), key="conv-1")  # running
    assert queue.submit(recorder(log, "other"), key="conv-2")
    assert not queue.submit(recorder(log, "queued twin"), key="conv-2")  # queued
    assert queue.submit(recorder(log, "no key"))
    assert queue.submit(recorder(log, "no key either"))
    stats = queue.stats()
    assert (stats["skipped_duplicate"], stats["skipped_full"]) == (2, 0)
    gate.set()
    async with asyncio.timeout(WAIT):
        await queue.join()
    assert log == ["other", "no key", "no key either"]
    # Once finished, a key may be submitted again.
    assert queue.submit(recorder(log, "again"), key="conv-1")
    async with asyncio.timeout(WAIT):
        await queue.join()
    assert log[-1] == "again"


async def test_no_more_than_concurrency_jobs_run_at_once() -> None:
    jobs = BoundedJobQueue(maxsize=20, concurrency=3)
    gate = asyncio.Event()
    started = asyncio.Semaphore(0)
    active = peak = 0

    async def job() -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        started.release()
        await gate.wait()
        active -= 1

    for _ in range(10):
        assert jobs.submit(job)
    jobs.start()
    try:
        async with asyncio.timeout(WAIT):
            for _ in range(3):
                await started.acquire()
        for _ in range(5):
            await asyncio.sleep(0)  # give a fourth job every chance to start, if it could
        assert (jobs.running, jobs.queued, peak) == (3, 7, 3)
        gate.set()
        async with asyncio.timeout(WAIT):
            await jobs.join()
    finally:
        await jobs.stop()
    assert peak == 3
    assert jobs.stats()["completed"] == 10


async def test_a_failing_job_is_counted_logged_once_and_the_worker_survives(
    queue: BoundedJobQueue, caplog: pytest.LogCaptureFixture
) -> None:
    log: list[str] = []

    async def fails() -> None:
        raise RuntimeError("backend said no " + "x" * 1000)

    async def cancels_itself() -> None:
        inner = asyncio.get_running_loop().create_future()
        inner.cancel()
        await inner

    queue.submit(fails, key="summary:conv-1")
    queue.submit(cancels_itself)
    queue.submit(recorder(log, "after"))
    with caplog.at_level(logging.WARNING, logger="chatkeep.service.job_queue"):
        queue.start()
        async with asyncio.timeout(WAIT):
            await queue.join()
    assert log == ["after"]
    stats = queue.stats()
    assert (stats["failed"], stats["completed"]) == (2, 1)
    records = [r for r in caplog.records if r.name == "chatkeep.service.job_queue"]
    assert len(records) == 2
    assert all(r.exc_info is None and "\n" not in r.getMessage() for r in records)
    assert "summary:conv-1" in records[0].getMessage()
    assert "RuntimeError: backend said no" in records[0].getMessage()
    assert len(records[0].getMessage()) < 400  # the error text is truncated


async def test_a_job_over_its_timeout_fails_and_frees_the_worker() -> None:
    jobs = BoundedJobQueue(maxsize=5, concurrency=1, job_timeout=0.01)
    never = asyncio.Event()
    log: list[str] = []
    jobs.submit(blocker(never))
    jobs.submit(recorder(log, "next"))
    jobs.start()
    try:
        async with asyncio.timeout(WAIT):
            await jobs.join()
    finally:
        await jobs.stop()
    assert log == ["next"]
    assert (jobs.failed, jobs.completed) == (1, 1)


async def test_stop_cancels_running_drops_queued_and_is_safe_twice() -> None:
    jobs = BoundedJobQueue(maxsize=5, concurrency=2)
    gate = asyncio.Event()
    started = asyncio.Semaphore(0)
    cancelled: list[bool] = []

    async def job() -> None:
        started.release()
        try:
            await gate.wait()
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    for n in range(5):
        jobs.submit(job, key=n)
    jobs.start()
    jobs.start()  # starting twice does nothing
    async with asyncio.timeout(WAIT):
        for _ in range(2):
            await started.acquire()
    await jobs.stop()
    await jobs.stop()
    assert cancelled == [True, True]
    stats = jobs.stats()
    assert (stats["running"], stats["queued"], stats["dropped"]) == (0, 0, 3)
    assert (stats["completed"], stats["failed"]) == (0, 0)
    async with asyncio.timeout(WAIT):
        await jobs.join()  # nothing is left to wait for
    assert not jobs.submit(job)
    assert jobs.stats()["skipped_stopped"] == 1
    with pytest.raises(RuntimeError, match="stopped"):
        jobs.start()


async def test_stop_before_start_is_harmless() -> None:
    jobs = BoundedJobQueue(maxsize=1)
    assert jobs.submit(recorder([], "never runs"))
    await jobs.stop()
    assert jobs.stats()["dropped"] == 1


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        BoundedJobQueue(maxsize=-1)
    with pytest.raises(ValueError):
        BoundedJobQueue(maxsize=1, concurrency=0)
    with pytest.raises(ValueError):
        BoundedJobQueue(maxsize=1, job_timeout=0)
