"""The README's curl walk-through works as written, against a real server."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e.server import CLEAN_EXIT, ServerProcess

pytestmark = pytest.mark.e2e

README = Path(__file__).resolve().parents[2] / "README.md"


def walkthrough_script() -> str:
    """The first ``sh`` block under the "Walk-through" heading."""
    text = README.read_text()
    section = text.split("## Walk-through", 1)[1]
    match = re.search(r"```sh\n(.*?)```", section, re.S)
    assert match, "README has no sh block in its walk-through"
    return match.group(1)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_readme_walkthrough_runs(tmp_path: Path) -> None:
    script = walkthrough_script()
    assert "BASE=http://127.0.0.1:8350" in script
    server = ServerProcess(tmp_path / "data")
    server.start()
    try:
        script = script.replace("BASE=http://127.0.0.1:8350", f"BASE={server.url}")
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        assert server.stop() in CLEAN_EXIT
    assert result.returncode == 0, result.stderr
    out = result.stdout
    # Each step printed what the README says it does.
    conversation = json.loads((tmp_path / "conversation.json").read_text())
    assert conversation["title"] == "first steps"
    replies = re.findall(r'"assistant_message":\{"id":"(msg_[0-9a-f]+)"', out)
    assert len(replies) == 2 and replies[0] == replies[1], "a retried send returns the first reply"
    assert '"message_count":4' in out  # two sends and their replies; the retry stored nothing
    assert "event: message" in out and "event: done" in out
    assert '"status":"archived"' in out
    assert '"object":"chat.completion"' in out
    assert out.rstrip().endswith("204")
