"""Two servers, one data directory: the second refuses, the first's reply is not touched."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from chatkeep.storage.sqlite import DATABASE_FILE
from tests.e2e.server import CLEAN_EXIT, ServerProcess, free_port

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]

#: Long enough that the second server is started and gone before the reply ends.
WORDS = " ".join(["slow"] * 300)
ENV = {"CHATKEEP_ECHO_DELAY_MS": "30"}


def serve(data_dir: Path, port: int) -> subprocess.CompletedProcess[str]:
    """Run a second ``chatkeep serve`` to its end (it must refuse to start)."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "CHATKEEP_DATA_DIR": str(data_dir),
        **ENV,
    }
    return subprocess.run(
        [sys.executable, "-m", "chatkeep", "serve", "--port", str(port)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_second_serve_on_a_live_data_dir_refuses(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = ServerProcess(data, env=ENV)
    first.start()
    try:
        async with httpx.AsyncClient(base_url=first.url, timeout=60) as client:
            cid = (await client.post("/api/conversations", json={})).json()["id"]
            done = None
            async with client.stream(
                "POST",
                f"/api/conversations/{cid}/messages",
                json={"content": WORDS, "stream": True},
            ) as response:
                lines = response.aiter_lines()
                async for line in lines:
                    if line.startswith("event: delta"):
                        break  # the reply is under way
                second = await asyncio.to_thread(serve, data, free_port())
                event = None
                async for line in lines:
                    if line.startswith("event:"):
                        event = line.split(":", 1)[1].strip()
                    elif line.startswith("data:") and event in ("done", "error"):
                        done = (event, json.loads(line.split(":", 1)[1]))
            items = (await client.get(f"/api/conversations/{cid}/messages")).json()["items"]
    finally:
        code = first.stop()
    assert code in CLEAN_EXIT

    output = second.stdout + second.stderr
    assert second.returncode != 0, output
    assert str(data / "chatkeep.lock") in output and str(first.pid) in output, output

    assert done is not None and done[0] == "done", done
    reply = items[-1]
    assert (reply["role"], reply["status"]) == ("assistant", "complete")
    assert reply["content"] == f"echo: {WORDS}"


async def test_second_serve_on_a_busy_port_fails_before_touching_storage(
    tmp_path: Path,
) -> None:
    first = ServerProcess(tmp_path / "first")
    first.start()
    try:
        elsewhere = tmp_path / "second"
        second = await asyncio.to_thread(serve, elsewhere, first.port)
    finally:
        first.stop()
    assert second.returncode != 0
    assert f"cannot listen on 127.0.0.1:{first.port}" in second.stderr, second.stderr
    assert not (elsewhere / DATABASE_FILE).exists()  # no store opened, no recovery ran
