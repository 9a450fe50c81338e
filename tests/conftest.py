"""Suite-wide fixtures: no test may leave tasks running."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest


@pytest.fixture(autouse=True)
async def no_leaked_tasks() -> AsyncIterator[None]:
    """Fail a test that leaves tasks running on its event loop."""
    before = asyncio.all_tasks()
    yield
    await asyncio.sleep(0)
    leaked = [
        t
        for t in asyncio.all_tasks() - before
        if not t.done() and t is not asyncio.current_task() and not _is_library_watcher(t)
    ]
    for task in leaked:
        task.cancel()
    assert not leaked, f"test left tasks running: {[t.get_name() for t in leaked]}"


def _is_library_watcher(task: asyncio.Task[object]) -> bool:
    # sse-starlette keeps one shutdown watcher per event loop for the loop's whole life.
    return getattr(task.get_coro(), "__qualname__", "") == "_shutdown_watcher"
