"""The README's three commands turn keys on, from a fresh data directory."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.e2e.server import CLEAN_EXIT, ServerProcess

pytestmark = pytest.mark.e2e

README = Path(__file__).resolve().parents[2] / "README.md"


def keys_commands() -> list[str]:
    """The lines of the first ``sh`` block under "Many users"."""
    section = README.read_text().split("## Many users", 1)[1]
    match = re.search(r"```sh\n(.*?)```", section, re.S)
    assert match, "README has no sh block in its keys section"
    return [line for line in match.group(1).splitlines() if line.strip()]


def test_three_commands_turn_keys_on(tmp_path: Path) -> None:
    export, create, serve = keys_commands()
    assert export.startswith("export CHATKEEP_AUTH=keys CHATKEEP_ADMIN_TOKEN=")
    make_keys = re.fullmatch(r'make keys ARGS="([^"]+)"(\s+#.*)?', create)
    make_run = re.fullmatch(r'make run ARGS="--host ([^"]+)"', serve)
    assert make_keys and make_run, (create, serve)
    makefile = (README.parent / "Makefile").read_text()
    assert "chatkeep keys $(ARGS)" in makefile and "chatkeep serve $(ARGS)" in makefile
    # What `make keys` runs, with this interpreter (the suite's own environment).
    chatkeep_keys = f"{sys.executable} -m chatkeep keys {make_keys.group(1)}"
    data_dir = tmp_path / "data"
    script = "\n".join([export, chatkeep_keys, "env | grep ^CHATKEEP_"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATKEEP_")}
    env["CHATKEEP_DATA_DIR"] = str(data_dir)
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    secret = re.search(r"\bck_[A-Za-z0-9_-]{43}\b", done.stdout)
    assert secret, done.stdout
    exported = dict(
        line.split("=", 1) for line in done.stdout.splitlines() if line.startswith("CHATKEEP_")
    )
    server = ServerProcess(data_dir, env={**exported, "CHATKEEP_HOST": make_run.group(1)})
    server.start()
    try:
        url = f"{server.url}/api/conversations"
        without = httpx.get(url)
        with_key = httpx.get(url, headers={"authorization": f"Bearer {secret.group(0)}"})
        admin = httpx.get(
            f"{server.url}/admin/keys",
            headers={"x-api-key": exported["CHATKEEP_ADMIN_TOKEN"]},
        )
    finally:
        assert server.stop() in CLEAN_EXIT
    assert without.status_code == 401
    assert with_key.status_code == 200 and with_key.json()["items"] == []
    assert admin.status_code == 200
    [key] = admin.json()["items"]
    assert key["owner_id"] == "alice" and key["label"] == "laptop" and key["rate"] == 5
