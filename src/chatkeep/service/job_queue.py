"""`BoundedJobQueue`: background work (conversation summaries) that never holds up a reply.

Jobs wait in a priority queue of at most ``maxsize`` entries (lower priority number first,
first come first served within a priority) and run on ``concurrency`` worker tasks.
`BoundedJobQueue.submit` never waits: when the queue is full, or a job with the same key is
already queued or running, the job is skipped, counted, and ``False`` comes back. Background
work is optional by nature (a summary skipped now is made at the next chance), so refusing
it costs nothing, while waiting for room would stall the reply that asked for it.

A job that fails is logged in one line and counted; the worker goes on with the next job.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Literal

logger = logging.getLogger(__name__)

Job = Callable[[], Awaitable[None]]

#: Longest exception text a failure log line carries; job errors may quote whole prompts.
MAX_ERROR_CHARS = 200


@dataclass(order=True, slots=True)
class _Queued:
    priority: int
    order: int
    job: Job = field(compare=False)
    key: Hashable | None = field(compare=False)


class BoundedJobQueue:
    """A bounded, prioritised queue of background jobs run by a fixed number of workers.

    Lifecycle: jobs may be submitted before `start`; they run once it is called. `stop`
    cancels the workers (and the jobs they run) and drops what is queued; afterwards
    `submit` refuses everything and `start` raises `RuntimeError`.
    """

    def __init__(
        self,
        *,
        maxsize: int,
        concurrency: int = 1,
        job_timeout: float | None = None,
        name: str = "jobs",
    ) -> None:
        if maxsize < 0:
            raise ValueError("maxsize must not be negative")
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if job_timeout is not None and not job_timeout > 0:
            raise ValueError("job_timeout must be positive (or None for no limit)")
        self.name = name
        self.maxsize = maxsize
        self.concurrency = concurrency
        self.job_timeout = job_timeout
        # Unbounded as an asyncio queue: `submit` checks the bound itself, before any work.
        self._queue: asyncio.PriorityQueue[_Queued] = asyncio.PriorityQueue()
        self._order = itertools.count()
        self._keys: set[Hashable] = set()
        self._workers: list[asyncio.Task[None]] = []
        self._state: Literal["new", "started", "stopped"] = "new"
        self._running = 0
        self.completed = 0
        self.failed = 0
        self.skipped_full = 0
        self.skipped_duplicate = 0
        self.skipped_stopped = 0
        self.dropped = 0

    # -- submitting ------------------------------------------------------------------

    @property
    def queued(self) -> int:
        """Jobs waiting for a worker."""
        return self._queue.qsize()

    @property
    def running(self) -> int:
        """Jobs being run now."""
        return self._running

    def submit(self, job: Job, *, priority: int = 0, key: Hashable | None = None) -> bool:
        """Queue ``job`` unless the queue is full or ``key`` is already queued or running.

        Never blocks. Returns whether the job was queued.
        """
        if self._state == "stopped":
            self.skipped_stopped += 1
            return False
        if key is not None and key in self._keys:
            self.skipped_duplicate += 1
            return False
        if self._queue.qsize() >= self.maxsize:
            self.skipped_full += 1
            return False
        if key is not None:
            self._keys.add(key)
        self._queue.put_nowait(_Queued(priority, next(self._order), job, key))
        return True

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Start the workers (needs a running event loop). Starting twice does nothing."""
        if self._state == "stopped":
            raise RuntimeError(f"{self.name} was stopped and cannot be started again")
        if self._state == "started":
            return
        self._state = "started"
        self._workers = [
            asyncio.create_task(self._work(), name=f"{self.name}-worker-{n}")
            for n in range(self.concurrency)
        ]

    async def stop(self) -> None:
        """Cancel the workers and the jobs they run, and drop queued jobs. Safe twice."""
        self._state = "stopped"
        workers, self._workers = self._workers, []
        for worker in workers:
            worker.cancel()
        if workers:
            await asyncio.gather(*workers, return_exceptions=True)
        while not self._queue.empty():
            self._queue.get_nowait()
            self._queue.task_done()
            self.dropped += 1
        self._keys.clear()

    async def join(self) -> None:
        """Wait until every job queued so far has finished (or was dropped by `stop`)."""
        await self._queue.join()

    def stats(self) -> dict[str, int]:
        """Counters for ``/admin`` and ``/metrics``."""
        return {
            "maxsize": self.maxsize,
            "concurrency": self.concurrency,
            "queued": self.queued,
            "running": self._running,
            "completed": self.completed,
            "failed": self.failed,
            "skipped_full": self.skipped_full,
            "skipped_duplicate": self.skipped_duplicate,
            "skipped_stopped": self.skipped_stopped,
            "dropped": self.dropped,
        }

    # -- workers ---------------------------------------------------------------------

    async def _work(self) -> None:
        while True:
            item = await self._queue.get()
            self._running += 1
            try:
                await self._run(item)
            finally:
                self._running -= 1
                if item.key is not None:
                    self._keys.discard(item.key)
                self._queue.task_done()

    async def _run(self, item: _Queued) -> None:
        try:
            if self.job_timeout is None:
                await item.job()
            else:
                async with asyncio.timeout(self.job_timeout):
                    await item.job()
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # `stop` is cancelling this worker
            # The job cancelled itself (an inner task it awaited was cancelled): a failure
            # of that job, not a reason to lose the worker.
            self._log_failure(item, "cancelled")
        except Exception as exc:
            self._log_failure(item, f"{type(exc).__name__}: {exc}")
        else:
            self.completed += 1

    def _log_failure(self, item: _Queued, error: str) -> None:
        self.failed += 1
        if len(error) > MAX_ERROR_CHARS:
            error = error[:MAX_ERROR_CHARS] + "…"
        # One line, no traceback: a failing backend would otherwise repeat the same stack
        # for every queued job.
        logger.warning("%s: job %s failed: %s", self.name, _label(item), error)


def _label(item: _Queued) -> str:
    if item.key is not None:
        return repr(item.key)[:80]
    return str(getattr(item.job, "__qualname__", type(item.job).__name__))
