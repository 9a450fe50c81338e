"""The storage contract suite runs once per backend, on a clock the tests step."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from chatkeep.storage.base import Store
from chatkeep.storage.memory import MemoryStore
from chatkeep.storage.sqlite import SQLiteStore


class SteppingClock:
    """A clock that moves one millisecond every time it is read: no two reads are equal."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        self.now += 0.001
        return self.now


@pytest.fixture
def clock() -> SteppingClock:
    return SteppingClock()


@pytest.fixture(params=["memory", "sqlite"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, clock: SteppingClock
) -> AsyncIterator[Store]:
    backend: Store
    if request.param == "memory":
        backend = MemoryStore(clock=clock)
    else:
        backend = SQLiteStore(tmp_path / "chatkeep.sqlite3", clock=clock)
    await backend.open()
    try:
        yield backend
    finally:
        await backend.close()
