"""The retention policy: archive, then delete, conversations idle for so many days.

Optional: with neither ``CHATKEEP_RETENTION_ARCHIVE_AFTER_DAYS`` nor
``CHATKEEP_RETENTION_DELETE_AFTER_DAYS`` set, `RetentionRunner.start` starts nothing.
Otherwise one task runs a pass at start and every ``interval_seconds`` after it. A pass
deletes the conversations idle (by ``last_activity``) for longer than
``delete_after_days``, whatever their status, then archives the active ones idle for longer
than ``archive_after_days`` — deletes first, so nothing is archived only to be deleted.

Bounded work: each store call changes at most ``batch_size`` conversations in one
transaction (`TransferStore.archive_idle`, `delete_idle`), and the pass yields to the
event loop between batches, so a backlog (the first pass on an old database) is worked
off a batch at a time while the server keeps answering. A conversation with a reply open
is never touched (the store checks it in the transaction that would change it).

Each id changed is handed to ``on_archived`` / ``on_deleted`` once it is durable, so the
caller can drop it from its caches (the working set, the reply hub). A pass that fails
(storage unavailable) is logged and counted; the next one runs at the next interval.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from chatkeep.errors import ChatkeepError
from chatkeep.settings import RetentionSettings
from chatkeep.storage.transfer_store import TransferStore

logger = logging.getLogger(__name__)

DAY_SECONDS = 86_400.0


@dataclass(frozen=True, slots=True)
class RetentionPass:
    """What one pass changed."""

    archived: int
    deleted: int


def _ignore(conversation_id: str) -> None:
    return None


class RetentionRunner:
    """Applies `RetentionSettings` in the background; ``start`` / ``stop`` bracket its task.

    ``clock`` is wall time (``last_activity`` is seconds since the epoch); ``sleep`` waits
    between passes. Both are injected so tests step them.
    """

    def __init__(
        self,
        store: TransferStore,
        settings: RetentionSettings,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_archived: Callable[[str], None] = _ignore,
        on_deleted: Callable[[str], None] = _ignore,
    ) -> None:
        self.store = store
        self.settings = settings
        self._clock = clock
        self._sleep = sleep
        self._on_archived = on_archived
        self._on_deleted = on_deleted
        self._task: asyncio.Task[None] | None = None
        self.runs = 0
        self.archived_total = 0
        self.deleted_total = 0
        self.failed_runs = 0
        self.last_run_at: float | None = None

    @property
    def enabled(self) -> bool:
        """Whether any part of the policy is set."""
        return (
            self.settings.archive_after_days is not None
            or self.settings.delete_after_days is not None
        )

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start the background task (nothing when the policy is unset)."""
        if self._task is not None:
            raise RuntimeError("the retention runner was already started")
        if self.enabled:
            self._task = asyncio.create_task(self._run_forever(), name="retention")

    async def stop(self) -> None:
        """Cancel the task and wait for it: a batch being committed is committed or not,
        never half. Safe to call twice, and before `start`."""
        task = self._task
        if task is None:
            return
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def run_once(self) -> RetentionPass:
        """One pass: delete, then archive, a batch at a time until none is left."""
        now = self._clock()
        deleted = archived = 0
        if self.settings.delete_after_days is not None:
            before = now - self.settings.delete_after_days * DAY_SECONDS
            deleted = await self._batches(self.store.delete_idle, before, self._deleted)
        if self.settings.archive_after_days is not None:
            before = now - self.settings.archive_after_days * DAY_SECONDS
            archived = await self._batches(self.store.archive_idle, before, self._archived)
        self.runs += 1
        self.last_run_at = now
        if archived or deleted:
            logger.info("retention: %d conversations archived, %d deleted", archived, deleted)
        return RetentionPass(archived=archived, deleted=deleted)

    def _deleted(self, conversation_id: str) -> None:
        self.deleted_total += 1
        self._on_deleted(conversation_id)

    def _archived(self, conversation_id: str) -> None:
        self.archived_total += 1
        self._on_archived(conversation_id)

    async def _batches(
        self,
        batch: Callable[[float, int], Awaitable[list[str]]],
        before: float,
        changed: Callable[[str], None],
    ) -> int:
        """Run ``batch`` until it comes back short; each id it changed goes to ``changed``."""
        limit = self.settings.batch_size
        total = 0
        while True:
            ids = await batch(before, limit)
            for conversation_id in ids:  # counted as each batch commits, even if a later fails
                changed(conversation_id)
            total += len(ids)
            if len(ids) < limit:
                return total
            await asyncio.sleep(0)  # let requests in between batches

    async def _run_forever(self) -> None:
        interval = self.settings.interval_seconds
        while True:
            try:
                await self.run_once()
            except ChatkeepError as exc:  # storage unavailable: the next pass may find it back
                self.failed_runs += 1
                logger.warning("retention pass failed (%s); next in %g s", exc.message, interval)
            except Exception:  # a bug: logged with its traceback, but the policy goes on
                self.failed_runs += 1
                logger.exception("retention pass failed; next in %g s", interval)
            await self._sleep(interval)

    def stats(self) -> dict[str, Any]:
        """What ``/metrics`` and ``/admin`` show: the policy and its counters."""
        return {
            "enabled": self.enabled,
            "archive_after_days": self.settings.archive_after_days,
            "delete_after_days": self.settings.delete_after_days,
            "runs": self.runs,
            "failed_runs": self.failed_runs,
            "archived_total": self.archived_total,
            "deleted_total": self.deleted_total,
            "last_run_at": self.last_run_at,
        }
