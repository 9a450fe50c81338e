"""Short real soaks against a live server (the mimic in conftest.py), bounded to seconds."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib.image
import psutil
import pytest
import yaml

from chatkeep.soak import ProgressSnapshot, SoakConfig, SoakReport, run_soak, write_report
from chatkeep.soak.plot import write_plot
from chatkeep.soak.probe import ProcessProbe

if TYPE_CHECKING:
    from .conftest import Mimic

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png_opens(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = matplotlib.image.imread(str(path))
    height, width = image.shape[:2]
    assert (width, height) == (1000, 700)


def assert_report_files(report: SoakReport, tmp_path: Path) -> dict[str, object]:
    """Write JSON, YAML and PNG; check they hold the same required keys; return the JSON."""
    write_report(report, tmp_path / "soak.json")
    write_report(report, tmp_path / "soak.yaml")
    write_plot(report, tmp_path / "soak.png")
    from_json = json.loads((tmp_path / "soak.json").read_text())
    from_yaml = yaml.safe_load((tmp_path / "soak.yaml").read_text())
    assert from_json == from_yaml
    for key in ("requests", "successes", "errors", "verdict", "slope_bytes_per_request"):
        assert key in from_json
    assert_png_opens(tmp_path / "soak.png")
    assert isinstance(from_json, dict)
    return from_json


async def test_chatkeep_conversations_with_process_memory(mimic: Mimic, tmp_path: Path) -> None:
    config = SoakConfig(
        url=mimic.url,
        requests=300,
        concurrency=8,
        messages_per_conversation=10,
        client_message_ids=True,
        pid=os.getpid(),
        sample_interval=0.02,
        uss_every=4,
    )
    report = await run_soak(config)
    assert (report.requests, report.successes, report.errors) == (300, 300, {})
    # Every lane opened a conversation and renewed it every ten messages.
    assert report.target_stats["conversations_created"] >= 30
    assert mimic.conflicts == 0
    assert mimic.replies == 300
    assert report.latency_ms is not None
    assert report.latency_ms["count"] == 300
    assert report.ttft_ms is None
    data = assert_report_files(report, tmp_path)
    memory = data["memory"]
    assert isinstance(memory, dict)
    assert memory["probe"] == f"pid {os.getpid()}"
    assert memory["start_bytes"] > 0
    assert memory["peak_bytes"] >= memory["end_bytes"]
    assert memory["uss_start_bytes"] is not None
    assert data["passed"] is (data["verdict"] != "growing")


async def test_chatkeep_streams_with_faults(mimic: Mimic, tmp_path: Path) -> None:
    mimic.faults = {"503": 10, "cut": 17, "error": 23}
    config = SoakConfig(url=mimic.url, stream=True, requests=400, concurrency=4)
    report = await run_soak(config)
    assert report.requests == 400
    assert set(report.errors) == {"http_503", "stream_error"}
    assert report.errors["http_503"] == 40
    assert report.successes == 400 - sum(report.errors.values())
    assert report.ttft_ms is not None
    assert report.ttft_ms["p50"] <= report.latency_ms["p50"]  # type: ignore[index]
    assert not report.passed  # well below 99 % success
    assert mimic.conflicts == 0
    data = assert_report_files(report, tmp_path)
    assert data["verdict"] == "unknown"
    assert data["memory"] is None


async def test_openai_streamed_open_loop_with_metrics(mimic: Mimic, tmp_path: Path) -> None:
    config = SoakConfig(
        openai_url=f"{mimic.url}/v1",
        model="m",
        stream=True,
        rate=400.0,
        requests=120,
        concurrency=4,
        metrics_url=f"{mimic.url}/metrics",
        sample_interval=0.02,
    )
    report = await run_soak(config)
    assert (report.requests, report.successes) == (120, 120)
    assert report.ttft_ms is not None and report.ttft_ms["count"] == 120
    data = assert_report_files(report, tmp_path)
    assert data["load"] == {
        "mode": "open",
        "concurrency": 4,
        "rate": 400.0,
        "requests_limit": 120,
        "duration_limit_s": None,
        "timeout_s": 60.0,
    }
    memory = data["memory"]
    assert isinstance(memory, dict)
    assert memory["start_bytes"] == 50 * 1024 * 1024


async def test_openai_non_streamed_stream_errors(mimic: Mimic) -> None:
    mimic.faults = {"cut": 5}
    config = SoakConfig(openai_url=mimic.url, model="m", stream=True, requests=50)
    report = await run_soak(config)
    assert report.errors == {"stream_error": 10}
    plain = await run_soak(SoakConfig(openai_url=mimic.url, model="m", requests=50))
    assert plain.successes == 50 and plain.ttft_ms is None


@pytest.mark.parametrize(("leak", "verdict"), [(0, "stable"), (8192, "growing")])
async def test_leak_verdict_from_metrics(mimic: Mimic, leak: int, verdict: str) -> None:
    mimic.leak_per_request = leak
    config = SoakConfig(
        url=mimic.url,
        duration=1.0,
        concurrency=4,
        metrics_url=f"{mimic.url}/metrics",
        # About a hundred samples: the verdict needs eight in the judged part of the run.
        sample_interval=0.01,
    )
    report = await run_soak(config)
    assert report.verdict == verdict
    assert report.passed is (verdict == "stable")
    if leak:
        assert report.slope_bytes_per_request == pytest.approx(leak, rel=0.05)


async def test_timeouts_are_counted_and_the_lane_moves_on(mimic: Mimic) -> None:
    mimic.faults = {"stall": 7}
    config = SoakConfig(url=mimic.url, requests=30, concurrency=2, timeout=0.5)
    report = await run_soak(config)
    assert report.errors == {"timeout": 4}
    assert report.successes == 26
    # The lane that timed out opened a fresh conversation instead of hitting 409.
    assert mimic.conflicts == 0


async def test_refused_connections_are_connect_errors() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    report = await run_soak(SoakConfig(url=f"http://127.0.0.1:{port}", requests=5))
    assert report.errors == {"connect": 5}
    assert report.success_rate == 0.0


async def test_stop_event_ends_a_long_run_early(mimic: Mimic) -> None:
    stop = asyncio.Event()

    class StopAfter:
        def start(self) -> None: ...

        def update(self, snapshot: ProgressSnapshot) -> None:
            if snapshot.completed >= 50:
                stop.set()

        def stop(self) -> None: ...

    config = SoakConfig(url=mimic.url, duration=60.0, sample_interval=0.02)
    report = await run_soak(config, progress=StopAfter(), stop=stop)
    assert 50 <= report.requests < 100_000
    assert report.duration < 60.0
    assert report.errors == {}
    assert report.stopped_early
    assert report.as_dict()["stopped_early"] is True


async def test_process_probe_counts_children_and_notices_exit() -> None:
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import sys; sys.stdin.read()", stdin=asyncio.subprocess.PIPE
    )
    try:
        child_probe = ProcessProbe(child.pid)
        alone = await child_probe.read()
        assert alone is not None and alone.rss > 0
        own_rss = psutil.Process().memory_info().rss
        family = await ProcessProbe(os.getpid(), uss_every=1).read()
        assert family is not None
        # Our own memory plus the child's (give or take what moved between the reads).
        assert family.rss > own_rss + alone.rss // 2
        assert family.uss is not None and family.uss > 0
    finally:
        assert child.stdin is not None
        child.stdin.close()
        await child.wait()
    assert await child_probe.read() is None
    assert child_probe.last_error is not None
