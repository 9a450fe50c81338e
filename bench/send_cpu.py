"""CPU per durable send: server process CPU time / sends, over a fixed wrk load.

    .venv/bin/python bench/send_cpu.py [--src NAME=DIR ...] [--rounds 3] [--seconds 5]

Each ``--src`` starts its own chatkeep (``PYTHONPATH=DIR`` first: a source tree, e.g. a
``git worktree`` of an older commit) in front of one fake backend; without one it measures
this checkout. Rounds interleave the sources so that the noise of a shared machine hits
them alike. CPU time (user + system, every thread, from psutil) per answered send is
steadier than sends a second when other work shares the cores. ``DETAIL=1`` adds the CPU
of each thread per send.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

import prepare
import processes
from wrk import WrkGenerator, find_wrk

SOURCE = Path(__file__).resolve().parents[1] / "src"


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def detail(pid: int) -> dict[str, float]:
    process = psutil.Process(pid)
    times = process.cpu_times()
    found = {"user": times.user, "system": times.system}
    for thread in process.threads():
        found[f"t{thread.id}"] = thread.user_time + thread.system_time
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", action="append", default=[])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--cases", default="json,stream")
    parser.add_argument("--model", default="fake")
    parser.add_argument("--setting", action="append", default=[])
    options = parser.parse_args()
    sources = [s.split("=", 1) for s in options.src] or [["this", str(SOURCE)]]
    settings = dict(s.split("=", 1) for s in options.setting)
    wrk = find_wrk()
    if wrk is None:
        sys.exit("wrk is not installed (apt-get install -y wrk)")
    generator = WrkGenerator(wrk)
    with tempfile.TemporaryDirectory(prefix="sendcpu-") as tmp:
        work = Path(tmp)
        fake = processes.start_fake_llm(work, tokens=16)
        servers = {}
        try:
            for name, src in sources:
                os.environ["PYTHONPATH"] = src
                servers[name] = processes.start_chatkeep(
                    work, fake.url, work / f"data-{name}", label=name, settings=settings
                )
            os.environ.pop("PYTHONPATH", None)
            for name, server in servers.items():
                prepare.warm_up(server.url, model="fake", requests=10)
                time.sleep(1.0)
                print(f"{name}: idle RSS {server.rss() / 2**20:.1f} MiB", flush=True)
            found: dict[tuple[str, str], list[tuple[float, float]]] = {}
            for round_number in range(options.rounds):
                for case in options.cases.split(","):
                    for name, server in servers.items():
                        path = work / f"c-{name}-{case}-{round_number}.txt"
                        conversations = prepare.create_conversations(
                            server.url,
                            path,
                            count=options.concurrency * 20,
                            model=options.model,
                            per_conversation=20,
                        )
                        generator.durable(
                            server.url,
                            conversations,
                            stream=case == "stream",
                            concurrency=options.concurrency,
                            seconds=1,
                        )
                        before = cpu_seconds(server.pid)
                        before_detail = detail(server.pid)
                        result = generator.durable(
                            server.url,
                            conversations,
                            stream=case == "stream",
                            concurrency=options.concurrency,
                            seconds=options.seconds,
                        )
                        used = cpu_seconds(server.pid) - before
                        after_detail = detail(server.pid)
                        sends = result.requests - result.errors
                        per = used / max(1, sends) * 1e6
                        found.setdefault((name, case), []).append((per, result.throughput))
                        print(
                            f"  round {round_number} {case:6} {name:10} "
                            f"{per:7.0f} µs/send  {result.throughput:7.0f} sends/s  "
                            f"errors {result.errors}",
                            flush=True,
                        )
                        if os.environ.get("DETAIL"):
                            sends_ = max(1, sends)
                            parts = {
                                k: (after_detail[k] - before_detail.get(k, 0.0)) / sends_ * 1e6
                                for k in after_detail
                            }
                            print(
                                "    "
                                + "  ".join(f"{k} {v:.0f}" for k, v in parts.items() if v >= 5)
                            )
            print()
            for (name, case), values in found.items():
                pers = sorted(v[0] for v in values)
                rates = [v[1] for v in values]
                print(
                    f"{name:10} {case:6} CPU µs/send median {statistics.median(pers):.0f} "
                    f"(min {pers[0]:.0f}, max {pers[-1]:.0f}); "
                    f"sends/s median {statistics.median(rates):.0f}"
                )
        finally:
            for server in servers.values():
                server.stop()
            fake.stop()


if __name__ == "__main__":
    main()
