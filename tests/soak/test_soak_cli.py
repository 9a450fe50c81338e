"""``chatkeep soak`` through a CLI runner, against a mimic server on its own thread."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import typer
import yaml
from typer.testing import CliRunner

from chatkeep.soak.cli import register

if TYPE_CHECKING:
    from .conftest import Mimic


def soak_app() -> typer.Typer:
    app = typer.Typer()
    register(app)

    # A second command keeps typer from collapsing the app into the single command.
    @app.command()
    def version() -> None:
        """Unused."""

    return app


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(soak_app(), ["soak", *args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def test_openai_run_writes_report_and_plot(threaded_mimic: Mimic, tmp_path: Path) -> None:
    report, plot = tmp_path / "soak.yaml", tmp_path / "soak.png"
    code, output = invoke(
        "--openai", threaded_mimic.url, "--model", "m", "--stream", "-n", "200", "-c", "4",
        "--metrics-url", f"{threaded_mimic.url}/metrics", "--sample-interval", "0.02",
        "--report", str(report), "--plot", str(plot),
    )  # fmt: skip
    assert code == 0, output
    assert "passed" in output
    data = yaml.safe_load(report.read_text())
    assert (data["requests"], data["successes"], data["errors"]) == (200, 200, {})
    assert data["target"]["kind"] == "openai"
    assert plot.read_bytes()[:4] == b"\x89PNG"


def test_leak_fails_the_run(threaded_mimic: Mimic, tmp_path: Path) -> None:
    threaded_mimic.leak_per_request = 16_384
    report = tmp_path / "soak.json"
    code, output = invoke(
        "--url", threaded_mimic.url, "--duration", "1", "--quiet",
        "--metrics-url", f"{threaded_mimic.url}/metrics", "--sample-interval", "0.01",
        "--report", str(report),
    )  # fmt: skip
    assert code == 1, output
    data = json.loads(report.read_text())
    assert data["verdict"] == "growing"
    assert data["passed"] is False


def test_low_success_rate_fails_the_run(threaded_mimic: Mimic) -> None:
    threaded_mimic.faults = {"503": 2}
    code, output = invoke("--url", threaded_mimic.url, "-n", "40", "--min-success", "0.9")
    assert code == 1
    assert "http_503=20" in output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-n", "10"], "exactly one target"),
        (["--url", "http://127.0.0.1:9"], "bound the run"),
        (["--openai", "http://127.0.0.1:9", "-n", "1"], "needs a model"),
        (["--url", "http://127.0.0.1:9", "-n", "1", "--report", "r.txt"], ".json"),
        (["--url", "http://127.0.0.1:9", "-n", "1", "--plot", "p.jpg"], ".png"),
    ],
)
def test_bad_options_exit_2(args: list[str], message: str) -> None:
    code, output = invoke(*args)
    assert code == 2
    assert message in " ".join(output.split())


@pytest.fixture
def no_matplotlib(monkeypatch: pytest.MonkeyPatch) -> None:
    """matplotlib is not installed (it comes with the ``chatkeep[soak]`` extra)."""
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError


@pytest.mark.usefixtures("no_matplotlib")
def test_without_matplotlib_a_soak_still_runs(threaded_mimic: Mimic, tmp_path: Path) -> None:
    report = tmp_path / "soak.json"
    code, output = invoke(
        "--url", threaded_mimic.url, "-n", "20", "--quiet", "--report", str(report),
    )  # fmt: skip
    assert code == 0, output
    assert json.loads(report.read_text())["requests"] == 20


@pytest.mark.usefixtures("no_matplotlib")
def test_without_matplotlib_a_plot_is_refused_before_the_load(tmp_path: Path) -> None:
    # Port 9 answers nothing: the refusal must come before any request is made.
    code, output = invoke("--url", "http://127.0.0.1:9", "-n", "1", "--plot", "p.png")
    assert code == 2
    assert "chatkeep[soak]" in " ".join(output.split())
