"""SQLite's heap is reported to the governor: its page caches fill, and that is no leak."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from chatkeep.memory.sqlite_heap import SQLiteHeap, load_sqlite_heap
from chatkeep.memory.watch import build_memory_watch
from chatkeep.settings import Settings


def test_the_heap_grows_as_a_connection_fills_its_page_cache(tmp_path: Path) -> None:
    heap = load_sqlite_heap()
    assert heap is not None
    before = heap.nbytes()
    connection = sqlite3.connect(tmp_path / "fill.db")
    try:
        connection.execute("CREATE TABLE t (x TEXT)")
        connection.executemany("INSERT INTO t VALUES (?)", [("x" * 200,)] * 5000)
        connection.commit()
        during = heap.nbytes()
    finally:
        connection.close()
    assert during - before > 500_000  # a megabyte of rows went through the page cache
    assert heap.nbytes() < during  # closing the connection gave its cache back


def test_reclaim_asks_sqlite_for_a_share_and_never_reports_less_than_zero() -> None:
    asked: list[int] = []

    def release(wanted: int) -> int:
        asked.append(wanted)
        return -1

    heap = SQLiteHeap(lambda: 1000, release)
    assert heap.reclaim(0.25) == 0
    assert asked == [250]
    assert heap.reclaim(0.0) == 0
    assert asked == [250]


def test_without_the_counters_there_is_no_heap() -> None:
    def load(name: str) -> Any:
        raise OSError("no such library")

    assert load_sqlite_heap(load=load) is None

    class NoSymbols:
        pass

    assert load_sqlite_heap(load=lambda name: NoSymbols()) is None


def test_the_memory_watch_registers_the_sqlite_heap(tmp_path: Path) -> None:
    watch = build_memory_watch(Settings(data_dir=tmp_path).memory)
    assert "sqlite" in watch.governor.registered


@pytest.mark.parametrize("fraction", [0.25, 1.0])
def test_the_real_release_call_is_safe(fraction: float) -> None:
    heap = load_sqlite_heap()
    assert heap is not None
    assert heap.reclaim(fraction) >= 0
