"""The command line: what it lists, what `serve` keeps out of its memory, `check`."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from chatkeep.cli import app
from chatkeep.storage.sqlite import DATABASE_FILE
from tests.storage.damage import corrupt_middle_page, make_database


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


def test_check_reports_a_sound_database(tmp_path: Path) -> None:
    asyncio.run(make_database(tmp_path / DATABASE_FILE, conversations=5))
    result = CliRunner().invoke(app, ["check", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith(": ok")


def test_check_reports_a_damaged_database(tmp_path: Path) -> None:
    asyncio.run(make_database(tmp_path / DATABASE_FILE))
    corrupt_middle_page(tmp_path / DATABASE_FILE)
    result = CliRunner().invoke(app, ["check", "--data-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "damaged" in result.output and "malformed" in result.output
    assert "backup" in result.output


def test_check_without_a_database_says_so(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["check", "--data-dir", str(tmp_path / "nowhere")])
    assert result.exit_code == 2
    assert "no database" in result.output
