"""A real server with a deliberate leak reads `growing` and the profiler names the line;
the same run without the leak reads `stable`.

The leak is not in the product: `tests.e2e.leaky_server` runs the real ``serve`` command with
the application wrapped in a middleware that keeps a buffer per request."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from tests.e2e.server import CHATKEEP, CLEAN_EXIT, ServerProcess, leaky

pytestmark = pytest.mark.e2e

REQUESTS = 4000
MEMORY_ENV = {
    "CHATKEEP_MEMORY_SAMPLE_EVERY_REQUESTS": "50",
    "CHATKEEP_MEMORY_SAMPLE_INTERVAL_SECONDS": "60",
    "CHATKEEP_MEMORY_WINDOW_SAMPLES": "1024",
}


async def _drive(client: httpx.AsyncClient, requests: int, concurrency: int = 8) -> None:
    async def worker(count: int) -> None:
        for _ in range(count):
            response = await client.get("/healthz")
            assert response.status_code == 200

    await asyncio.gather(*(worker(requests // concurrency) for _ in range(concurrency)))


async def _run(
    tmp_path: Path, leak_bytes: int, *, profile: bool
) -> tuple[dict[str, object], dict[str, object]]:
    command = leaky(leak_bytes) if leak_bytes else CHATKEEP
    server = ServerProcess(tmp_path / f"data-{leak_bytes}", env=MEMORY_ENV, command=command)
    server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            await _drive(client, REQUESTS)
            # Read the verdict before profiling: tracing allocations costs memory itself.
            memory = (await client.get("/admin/memory")).json()
            found: dict[str, object] = {}
            if profile:
                profile_task = asyncio.create_task(
                    client.post("/admin/memory/profile", json={"seconds": 1.0, "top": 10})
                )
                await _drive(client, 1000)
                found = (await profile_task).json()
    finally:
        assert server.stop() in CLEAN_EXIT
    return memory, found


async def test_leak_reads_growing_and_profiler_names_the_line(tmp_path: Path) -> None:
    memory, profile = await _run(tmp_path, 4096, profile=True)
    trend = memory["trend"]
    assert isinstance(trend, dict)
    assert trend["verdict"] == "growing", trend
    assert float(trend["slope_per_request"]) > 2048
    top = profile["top"]
    assert isinstance(top, list) and top
    assert any(str(line["file"]).endswith("leaky_server.py") for line in top[:3]), top


async def test_no_leak_reads_stable(tmp_path: Path) -> None:
    memory, _ = await _run(tmp_path, 0, profile=False)
    trend = memory["trend"]
    assert isinstance(trend, dict)
    assert trend["verdict"] == "stable", trend
