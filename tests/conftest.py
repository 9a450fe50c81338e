"""Suite-wide fixtures: no test may leave tasks running, or read the developer's settings."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import pytest


@pytest.fixture(autouse=True)
def no_chatkeep_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run every test without the ``CHATKEEP_*`` variables of whoever runs the suite.

    A test sets what it needs itself; a variable left in a developer's shell (or in CI)
    must not change what the defaults under test are.
    """
    for name in list(os.environ):
        if name.startswith("CHATKEEP_"):
            monkeypatch.delenv(name)


@pytest.fixture(autouse=True)
async def no_leaked_tasks() -> AsyncIterator[None]:
    """Fail a test that leaves tasks running on its event loop."""
    before = asyncio.all_tasks()
    yield
    await asyncio.sleep(0)
    leaked = [
        t for t in asyncio.all_tasks() - before if not t.done() and t is not asyncio.current_task()
    ]
    for task in leaked:
        task.cancel()
    assert not leaked, f"test left tasks running: {[t.get_name() for t in leaked]}"
