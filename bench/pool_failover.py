"""Failover: replies of a three-backend pool while one backend at a time is killed.

Three fake backends run on fixed ports. Every ``kill_every`` seconds the next one in turn
is killed (SIGKILL: its connections die mid-stream, as in a crash), stays down
``down_seconds``, and is started again on the same port, as a supervisor would. Two pools
(default settings: three attempts, breakers, probes; no hedging) serve the same three
backends, loaded together by streaming clients:

* ``passthrough`` — OpenAI-wire backends, ``/v1`` relayed byte for byte;
* ``translated`` — Ollama-wire backends, ``/v1`` read from the pool's token stream.

A steady run without kills comes first, as the yardstick of the p99. A failure is
*before* or *after* the first token (the first chunk with text, as the client sees it):
the pool may retry only before its own idea of a first token, so a reply cut after its
first token is lost by design, and one cut before it is a failover that did not happen.
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pool_control
import processes
from pool_client import StreamRun, run_streams
from processes import Server

PATHS = {"passthrough": "openai", "translated": "ollama"}


def _say(text: str) -> None:
    print(text, flush=True)


@dataclass
class KillSchedule:
    """Kills backends in turn and starts them again on their ports, in a thread of its own."""

    servers: list[Server]
    flags: list[str]
    work_dir: Path
    seconds: float
    every: float
    down: float
    events: list[dict[str, Any]] = field(default_factory=list)
    _generation: int = 0

    def run(self, origin: float) -> None:
        """Kill at ``every / 2``, then every ``every`` seconds, while within ``seconds``."""
        at = self.every / 2
        victim = 0
        while at < self.seconds:
            time.sleep(max(0.0, origin + at - time.perf_counter()))
            self._cycle(victim, origin)
            victim = (victim + 1) % len(self.servers)
            at += self.every

    def _cycle(self, victim: int, origin: float) -> None:
        server = self.servers[victim]
        port = int(server.url.rsplit(":", 1)[1])
        killed = time.perf_counter() - origin
        server.process.kill()
        server.process.wait()
        time.sleep(self.down)
        self._generation += 1
        name = f"failover-fake-{victim + 1}-restart-{self._generation}"
        self.servers[victim] = processes.start_fake_llm_with(
            self.work_dir, self.flags, name=name, port=port
        )
        back = time.perf_counter() - origin
        self.events.append(
            {"backend": victim + 1, "killed_at_s": round(killed, 2), "back_at_s": round(back, 2)}
        )
        _say(f"  failover: backend {victim + 1} killed at {killed:.1f} s, back at {back:.1f} s")

    def stop_all(self) -> None:
        for server in self.servers:
            server.stop()


async def _load(chatkeep_url: str, options: argparse.Namespace, seconds: float) -> list[StreamRun]:
    lanes = options.failover_concurrency
    return list(
        await asyncio.gather(
            *(run_streams(chatkeep_url, path, concurrency=lanes, seconds=seconds) for path in PATHS)
        )
    )


def _case(path: str, run: StreamRun) -> dict[str, Any]:
    failed = [o for o in run.outcomes if not o.ok]
    after = sum(1 for o in failed if o.ttft is not None)
    return {
        "path": path,
        **run.as_dict(),
        "failed_before_first_token": len(failed) - after,
        "failed_after_first_token": after,
    }


def run_failover(work_dir: Path, options: argparse.Namespace) -> dict[str, Any]:
    """The steady run, then the run with kills; the raw numbers."""
    flags = [
        "--tokens",
        "16",
        "--first-token-ms",
        str(options.failover_first_token_ms),
        "--delay-ms",
        str(options.failover_delay_ms),
    ]
    ports = [processes.free_port() for _ in range(3)]
    servers = [
        processes.start_fake_llm_with(work_dir, flags, name=f"failover-fake-{n + 1}", port=port)
        for n, port in enumerate(ports)
    ]
    schedule = KillSchedule(
        servers,
        flags,
        work_dir,
        seconds=options.failover_seconds,
        every=options.kill_every,
        down=options.down_seconds,
    )
    try:
        urls = [server.url for server in servers]
        models = {
            path: pool_control.pool_model(urls, provider=wire) for path, wire in PATHS.items()
        }
        settings = pool_control.chatkeep_settings(models, default="passthrough")
        chatkeep = processes.start_chatkeep(
            work_dir, urls[0], work_dir / "failover-data", label="failover", settings=settings
        )
        try:
            asyncio.run(_load(chatkeep.url, options, 2.0))  # warm-up
            steady = asyncio.run(_load(chatkeep.url, options, options.failover_steady))
            for path, run in zip(PATHS, steady, strict=True):
                _say(f"  failover steady {path:11} {run.as_dict()}")
            origin = time.perf_counter()
            killer = threading.Thread(target=schedule.run, args=(origin,), daemon=True)
            killer.start()
            chaos = asyncio.run(_load(chatkeep.url, options, options.failover_seconds))
            killer.join()
            for path, run in zip(PATHS, chaos, strict=True):
                _say(f"  failover kills  {path:11} {run.as_dict()}")
            admin = pool_control.admin_providers(chatkeep.url)
        finally:
            chatkeep.stop()
    finally:
        schedule.stop_all()
    return {
        "backend": {
            "tokens": 16,
            "first_token_ms": options.failover_first_token_ms,
            "delay_ms": options.failover_delay_ms,
        },
        "kill": "SIGKILL of the process, restarted on the same port",
        "kill_every_s": options.kill_every,
        "down_s": options.down_seconds,
        "seconds": options.failover_seconds,
        "steady_seconds": options.failover_steady,
        "concurrency_per_path": options.failover_concurrency,
        "events": schedule.events,
        "steady": [_case(path, run) for path, run in zip(PATHS, steady, strict=True)],
        "kills": [_case(path, run) for path, run in zip(PATHS, chaos, strict=True)],
        "pools": {
            entry["model"]: {
                "retries": entry.get("retries"),
                "probes": (entry.get("probing") or {}).get("probes"),
                "breaker_openings": [b["breaker"]["times_opened"] for b in entry["backends"]],
            }
            for entry in admin
            if entry.get("pooled")
        },
    }


def failover_table(data: dict[str, Any]) -> str:
    """The markdown table of the failover run."""
    lines = [
        "| path | run | replies | success | failed before / after first token "
        "| TTFT p99 | reply p99 | retries | breaker openings |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run_name, label in (("steady", "no kills"), ("kills", "kills")):
        for case in data[run_name]:
            pool = data["pools"].get(case["path"], {})
            extra = (
                f"| {pool.get('retries')} | {sum(pool.get('breaker_openings', []))} |"
                if run_name == "kills"
                else "| | |"
            )
            lines.append(
                f"| {case['path']} | {label} | {case['requests']} "
                f"| {case['success_rate'] * 100:.3f}% "
                f"| {case['failed_before_first_token']} / {case['failed_after_first_token']} "
                f"| {case['ttft_ms']['p99']:.1f} ms | {case['latency_ms']['p99']:.1f} ms {extra}"
            )
    return "\n".join(lines)
