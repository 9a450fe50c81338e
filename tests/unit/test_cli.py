"""The command line: what it lists, and what `serve` keeps out of its memory."""

from __future__ import annotations

import subprocess
import sys


def test_cli_lists_every_command_but_serve_loads_only_itself() -> None:
    listing = subprocess.run(
        [sys.executable, "-m", "chatkeep", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert all(name in listing for name in ("serve", "soak", "fake-llm"))
    probe = (
        "import sys; from chatkeep.cli import app;"
        "import chatkeep.app;"
        "print('chatkeep.soak.cli' in sys.modules, 'chatkeep.fakellm.cli' in sys.modules)"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert loaded.stdout.split() == ["False", "False"]
    serve_help = subprocess.run(
        [sys.executable, "-m", "chatkeep", "serve", "--help"], capture_output=True, text=True
    )
    assert serve_help.returncode == 0 and "--port" in serve_help.stdout
