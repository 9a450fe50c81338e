"""Exporting 100 000 messages keeps memory flat: over HTTP from a real server, and with the CLI.

The conversation (100 000 messages of about 500 characters: a document of about 60 MB) is
written into the data directory before the server starts. The bound on growth, 40 MiB,
sits far from both sides: a streaming export holds one page of 100 messages (~50 KB of
text), one 64 KiB chunk and SQLite's page caches (2 MiB a connection by default); an
export that held the document would grow by its 60 MB of bytes at the very least, and by
several times that as records.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import orjson
import psutil
import pytest

from chatkeep.domain.records import Conversation, Message, Usage
from chatkeep.storage.sqlite import DATABASE_FILE, SQLiteStore
from tests.e2e.server import CHATKEEP, CLEAN_EXIT, REPO, ServerProcess

pytestmark = pytest.mark.e2e

OWNER = "default"
BIG = "conv_big"
SMALL = "conv_small"
MESSAGES = 100_000
MIB = 1024 * 1024
#: Growth of resident memory an export may cost (see the module docstring).
MAX_GROWTH = 40 * MIB
TEXT = "Streaming keeps memory flat, whatever the size of the conversation. ✓ " * 7


def _conversation(cid: str, count: int) -> tuple[Conversation, list[Message]]:
    conversation = Conversation(
        cid, OWNER, "big", "echo", None, {}, "active", 1.7e9, 1.7e9, 1.7e9, count
    )
    messages = [
        Message(
            f"{cid}_{seq}",
            cid,
            seq,
            "user" if seq % 2 else "assistant",
            f"{seq} {TEXT}",
            "complete",
            1.7e9 + seq,
            usage=None if seq % 2 else Usage(seq, seq),
        )
        for seq in range(1, count + 1)
    ]
    return conversation, messages


async def _prefill(data_dir: Path) -> None:
    store = SQLiteStore(data_dir / DATABASE_FILE)
    await store.open()
    try:
        for cid, count in ((BIG, MESSAGES), (SMALL, 10)):
            assert await store.import_conversation(OWNER, *_conversation(cid, count))
    finally:
        await store.close()


class PeakRss:
    """Samples a process's resident memory on a thread until stopped; keeps the peak."""

    def __init__(self, pid: int) -> None:
        self._process = psutil.Process(pid)
        self._stop = threading.Event()
        self.peak = 0
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self._process.memory_info().rss)
            except psutil.Error:  # it ended
                return
            self._stop.wait(0.005)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _check_document(path: Path, count: int) -> None:
    document = orjson.loads(path.read_bytes())
    (conversation,) = document["conversations"]
    messages = conversation["messages"]
    assert len(messages) == count
    assert [messages[0]["seq"], messages[-1]["seq"]] == [1, count]


async def _download(client: httpx.AsyncClient, cid: str, path: Path) -> None:
    async with client.stream("GET", f"/api/conversations/{cid}/export") as response:
        assert response.status_code == 200
        with path.open("wb") as file:
            async for chunk in response.aiter_raw():
                file.write(chunk)


def _cli_peak_rss(data_dir: Path, cid: str, output: Path) -> int:
    """Run ``chatkeep export`` for one conversation; the peak of its resident bytes."""
    process = subprocess.Popen(
        [
            sys.executable,
            *CHATKEEP,
            "export",
            "--data-dir",
            str(data_dir),
            "--conversation",
            cid,
            "--output",
            str(output),
        ],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stderr=subprocess.PIPE,
    )
    # Sampled (not the child's ru_maxrss: Linux counts the forking parent's size in it).
    with PeakRss(process.pid) as sampled:
        _, said = process.communicate(timeout=300)
    assert process.returncode == 0, said.decode()
    return sampled.peak


async def test_exporting_100k_messages_keeps_memory_flat(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    await _prefill(data_dir)
    server = ServerProcess(data_dir, command=CHATKEEP)
    server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            for _ in range(3):  # warm up: the code paths, the connections, the allocator
                await _download(client, SMALL, tmp_path / "small.json")
            baseline = psutil.Process(server.pid).memory_info().rss
            exported = tmp_path / "big.json"
            with PeakRss(server.pid) as sampled:
                await _download(client, BIG, exported)
        assert exported.stat().st_size > 50 * MIB
        growth = sampled.peak - baseline
        assert growth < MAX_GROWTH, f"server grew {growth / MIB:.1f} MiB"
        _check_document(exported, MESSAGES)

        # The CLI, beside the running server (it opens the database shared).
        small_peak = await asyncio.to_thread(
            _cli_peak_rss, data_dir, SMALL, tmp_path / "cli-small.json"
        )
        big_peak = await asyncio.to_thread(_cli_peak_rss, data_dir, BIG, tmp_path / "cli.json")
        growth = big_peak - small_peak
        assert growth < MAX_GROWTH, f"the CLI grew {growth / MIB:.1f} MiB"
        _check_document(tmp_path / "cli.json", MESSAGES)
    finally:
        assert server.stop() in CLEAN_EXIT
