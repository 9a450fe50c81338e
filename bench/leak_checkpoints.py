"""The leak verdict at fixed checkpoints of a create-and-send workload, with and without a leak.

The workload is the plainest use of the server: create a conversation, send it one message
(a JSON reply from ``echo``), repeat, with ``--concurrency`` (8) clients. The server runs
with its default settings; at each checkpoint of requests it has served (3 000, 6 000, …,
18 000, 20 000) the benchmark reads ``/admin/memory`` and keeps the verdict, the slope, RSS
and the bytes the bounded structures report.

Runs, one after another (never in parallel: the machine is shared):

* no leak: the real ``chatkeep serve``; every checkpoint must read ``stable``;
* a leak of 4 KiB per request: must read ``growing`` by 3 000 requests;
* a leak of 512 B per request: must read ``growing`` by 20 000 requests.

A leaking server is ``tests/e2e/leaky_server.py``: the real ``serve`` command with the
application wrapped in a middleware that keeps a buffer per HTTP request (the e2e leak test
launches the same wrapper). Results go to ``bench/results/leak_checkpoints.json``.

    .venv/bin/python bench/leak_checkpoints.py
    .venv/bin/python bench/leak_checkpoints.py --leaks 0 4096 --checkpoints 3000 6000
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from leak_workload import message_text
from memory_clients import get_json, session
from memory_server import (
    Server,
    add_run_options,
    format_table,
    load_previous,
    machine,
    mib,
    parse_env,
    result_key,
    revision,
    write_results,
)

REPO = Path(__file__).resolve().parent.parent
CHECKPOINTS = (3000, 6000, 9000, 12000, 15000, 18000, 20000)
#: Leaks per request, and the request count by which each must read ``growing``.
DETECT_BY = {4096: 3000, 512: 20000}


def leaky_command(leak_bytes: int) -> tuple[str, ...]:
    """The server's command line before ``serve``: the product, or the leaking wrapper."""
    if not leak_bytes:
        return ("-m", "chatkeep")
    return ("-m", "tests.e2e.leaky_server", "--bytes-per-request", str(leak_bytes))


class CreateAndSend:
    """Clients that create a conversation, send it one message, and start over."""

    def __init__(self, client: aiohttp.ClientSession, url: str) -> None:
        self.client = client
        self.url = url
        self.sent = 0
        self.failures: dict[str, int] = {}

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
        try:
            async with self.client.post(f"{self.url}{path}", json=body) as response:
                payload: dict[str, Any] = await response.json(content_type=None)
                if response.status >= 300:
                    self._fail(str(response.status))
                    return None
                return payload
        except (aiohttp.ClientError, TimeoutError) as exc:
            self._fail(type(exc).__name__)
            return None

    def _fail(self, reason: str) -> None:
        self.failures[reason] = self.failures.get(reason, 0) + 1

    async def one_round(self) -> None:
        """One conversation, one message (two requests)."""
        created = await self._post("/api/conversations", {})
        if created is None:
            return
        index = self.sent
        self.sent += 1
        await self._post(
            f"/api/conversations/{created['id']}/messages", {"content": message_text(index)}
        )


def checkpoint_row(checkpoint: int, snapshot: dict[str, Any]) -> dict[str, Any]:
    """What one ``/admin/memory`` read at a checkpoint keeps."""
    trend = snapshot["trend"]
    rss_trend = snapshot.get("rss_trend") or {}
    return {
        "checkpoint": checkpoint,
        "server_requests": snapshot["requests"],
        "verdict": trend["verdict"],
        "slope_per_request": round(trend["slope_per_request"], 1),
        "p_value": trend["p_value"],
        "samples": trend["samples"],
        "rss_verdict": rss_trend.get("verdict"),
        "rss_slope_per_request": round(rss_trend.get("slope_per_request", 0.0), 1),
        "rss": snapshot["rss"],
        "accounted_bytes": snapshot.get("accounted_bytes"),
        "structures": {s["name"]: s["nbytes"] for s in snapshot.get("structures", [])},
    }


async def drive_to_checkpoints(
    server: Server, checkpoints: list[int], args: argparse.Namespace
) -> list[dict[str, Any]]:
    """Run the workload until the last checkpoint, reading the verdict at each one.

    Checkpoints count the requests the *server* recorded (``requests`` in the snapshot), so
    the reads themselves are included, as an operator's would be. The clients pause while a
    checkpoint is read, so the read lands on the checkpoint rather than past it.
    """
    rows: list[dict[str, Any]] = []
    deadline = time.monotonic() + args.timeout
    async with session(args.concurrency + 2) as client:
        workload = CreateAndSend(client, server.url)
        for checkpoint in checkpoints:
            while time.monotonic() < deadline:
                snapshot = await get_json(client, f"{server.url}/admin/memory")
                left = checkpoint - int(snapshot["requests"])
                if left <= 0:
                    break
                # Each round is two requests; stop a little short and finish in small steps.
                rounds = max(1, min(left // 2, 50 * args.concurrency))
                await _run_rounds(workload, rounds, args.concurrency)
            server.ensure_alive()
            row = checkpoint_row(checkpoint, snapshot)
            rows.append(row)
            print(
                f"  {row['server_requests']:>6}: {row['verdict']:<9} "
                f"{row['slope_per_request']:>8} B/req  rss {mib(row['rss'])} MiB  "
                f"accounted {mib(row['accounted_bytes'])} MiB",
                flush=True,
            )
        if workload.failures:
            print(f"  failures: {workload.failures}", flush=True)
    return rows


async def _run_rounds(workload: CreateAndSend, rounds: int, concurrency: int) -> None:
    queue = iter(range(rounds))

    async def worker() -> None:
        for _ in queue:
            await workload.one_round()

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def run_one(leak_bytes: int, args: argparse.Namespace) -> dict[str, Any]:
    """One server (leaking or not), driven to every checkpoint."""
    # The leaking wrapper lives in tests/: the repository must be importable.
    env = {"PYTHONPATH": str(REPO), **args.env}
    with tempfile.TemporaryDirectory(prefix="chatkeep-bench-") as tmp:
        server = Server(Path(tmp) / f"verdict-{leak_bytes}", env, leaky_command(leak_bytes))
        server.start()
        began = time.monotonic()
        try:
            rows = await drive_to_checkpoints(server, args.checkpoints, args)
        finally:
            server.stop()
    return {
        "revision": revision(),
        "extra_env": args.env,
        "leak_bytes_per_request": leak_bytes,
        "seconds": round(time.monotonic() - began, 1),
        "checkpoints": rows,
        "target_met": target_met(leak_bytes, rows),
    }


def target_met(leak_bytes: int, rows: list[dict[str, Any]]) -> bool:
    """No leak: ``stable`` everywhere. A leak: ``growing`` from its detection point on."""
    if not leak_bytes:
        return all(row["verdict"] == "stable" for row in rows)
    by = DETECT_BY.get(leak_bytes, max(CHECKPOINTS))
    return all(row["verdict"] == "growing" for row in rows if row["checkpoint"] >= by)


def verdict_table(runs: list[dict[str, Any]]) -> str:
    """Leak per request down, checkpoints across: the verdict and its slope."""
    checkpoints = sorted({row["checkpoint"] for run in runs for row in run["checkpoints"]})
    headers = ["leak B/req", *(f"{c:,}".replace(",", " ") for c in checkpoints), "target"]
    table = []
    for run in runs:
        by_checkpoint = {row["checkpoint"]: row for row in run["checkpoints"]}
        cells = [
            f"{by_checkpoint[c]['verdict']} ({by_checkpoint[c]['slope_per_request']:+.0f})"
            if c in by_checkpoint
            else ""
            for c in checkpoints
        ]
        table.append(
            [run["leak_bytes_per_request"], *cells, "met" if run["target_met"] else "MISSED"]
        )
    return format_table(headers, table)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leaks", type=int, nargs="+", default=[0, 4096, 512])
    parser.add_argument("--checkpoints", type=int, nargs="+", default=list(CHECKPOINTS))
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per run")
    add_run_options(parser, env_example="CHATKEEP_WORKING_SET_BYTES=1000000")
    args = parser.parse_args(argv)
    args.env = parse_env(args.env)
    args.checkpoints = sorted(args.checkpoints)
    return args


async def main(args: argparse.Namespace) -> dict[str, Any]:
    """Each leak in turn; print the table and return the results."""
    results = load_previous("leak_checkpoints.json")
    results["machine"] = machine()
    runs = []
    for leak_bytes in args.leaks:
        print(f"leak of {leak_bytes} B/request", flush=True)
        runs.append(await run_one(leak_bytes, args))
        results[result_key(f"leak-{leak_bytes}", args.label)] = runs[-1]
    print(verdict_table(runs), flush=True)
    return results


if __name__ == "__main__":
    options = parse_args()
    output = asyncio.run(main(options))
    print(f"wrote {write_results('leak_checkpoints', output)}")
