"""chatkeep against a direct backend, side by side, on one machine, in one run.

    .venv/bin/python bench/run.py            # or: make bench

Starts the fake backend (``chatkeep fake-llm --tokens 16``) and chatkeep in front of it
(SQLite, ``synchronous=FULL``, a temporary data directory), then measures:

* the OpenAI-compatible passthrough, JSON and streamed, at concurrency 1 and 32, against
  the fake backend directly: throughput and p50/p99 latency, and the time to first token;
* the durable conversation send (two committed messages and a model call), JSON and
  streamed, at concurrency 1 and 32;
* chatkeep's resident memory when idle, and after 20 000 requests with its slope.

and, asked for with ``--parts``, what independent gateway boards report:

* ``frontier``: the highest offered rate whose p99 stays under 1, 5, 10 and 50 ms (open
  loop, `frontier`), direct, through the passthrough and as durable sends;
* ``streams``: how many streamed replies at once arrive with no token lost or late
  (`streams`), with the time to first token and the longest gap against direct;
* ``burst``: RSS idle → steady → after a 10x burst (`burst`).

Load comes from ``wrk`` when it is installed, else from the soak engine. A table of ratios
chatkeep / direct backend is printed, and every raw number goes to
``bench/results/latest.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import burst
import frontier
import machine
import prepare
import processes
import report
import resident
import soakgen
import streams
import streams_report
from load import LoadGenerator, LoadResult
from processes import Server
from wrk import WrkGenerator, find_wrk

RESULTS = Path(__file__).parent / "results" / "latest.json"


def _options(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--generator",
        choices=("auto", "wrk", "soak"),
        default="auto",
        help="load generator: wrk when installed (auto), or the soak engine",
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each load case")
    parser.add_argument(
        "--warmup", type=float, default=1.0, help="unmeasured load before each case (seconds)"
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="repeat each case; the median of each number"
    )
    parser.add_argument(
        "--ttft-requests", type=int, default=1000, help="streams read one at a time for TTFT"
    )
    parser.add_argument(
        "--per-conversation", type=int, default=20, help="sends to a conversation, then a new one"
    )
    parser.add_argument(
        "--memory-requests", type=int, default=20_000, help="requests of each memory run"
    )
    parser.add_argument(
        "--memory-runs",
        default="durable,passthrough",
        help="comma-separated memory runs: durable, passthrough (empty: none)",
    )
    parser.add_argument(
        "--memory-working-set",
        default=None,
        help="working set bound of the memory runs' server (e.g. 8MiB); default: the server's",
    )
    parser.add_argument(
        "--memory-setting",
        action="append",
        default=[],
        metavar="CHATKEEP_NAME=VALUE",
        help="a setting of the memory runs' server (repeatable)",
    )
    parser.add_argument(
        "--parts",
        default="gateway,durable,memory",
        help="comma-separated parts to run: gateway (with TTFT), durable, memory; and the "
        "gateway boards' frontier, streams, burst",
    )
    boards = parser.add_argument_group("gateway boards (parts frontier, streams, burst)")
    boards.add_argument("--frontier-start", type=float, default=100.0, help="first rate (req/s)")
    boards.add_argument("--frontier-factor", type=float, default=2**0.5, help="rate step factor")
    boards.add_argument("--frontier-max", type=float, default=12_800.0, help="highest rate")
    boards.add_argument("--frontier-seconds", type=float, default=2.0, help="shortest step")
    boards.add_argument(
        "--frontier-min-samples", type=int, default=500, help="requests a step, at least"
    )
    boards.add_argument(
        "--frontier-lanes", type=int, default=64, help="connections of the open-loop generator"
    )
    boards.add_argument(
        "--streams-counts", default="256,1000", help="comma-separated numbers of streams at once"
    )
    boards.add_argument("--stream-tokens", type=int, default=20, help="tokens per reply")
    boards.add_argument(
        "--stream-delay-ms", type=float, default=50.0, help="the backend's pause before a token"
    )
    boards.add_argument(
        "--burst-concurrency", type=int, default=32, help="connections of the steady load"
    )
    boards.add_argument("--burst-factor", type=int, default=10, help="burst / steady connections")
    boards.add_argument("--steady-seconds", type=float, default=10.0)
    boards.add_argument("--burst-seconds", type=float, default=5.0)
    boards.add_argument("--after-seconds", type=float, default=30.0, help="quiet after the burst")
    parser.add_argument("--output", type=Path, default=RESULTS, help="where the JSON goes")
    options = parser.parse_args(argv)
    if options.seconds <= 0 or options.rounds < 1 or options.memory_requests < 100:
        parser.error("--seconds must be positive, --rounds >= 1, --memory-requests >= 100")
    for item in options.memory_setting:
        if not item.startswith("CHATKEEP_") or "=" not in item:
            parser.error(f"--memory-setting takes CHATKEEP_NAME=VALUE, not {item!r}")
    return options


def _generator(choice: str) -> tuple[LoadGenerator, str]:
    executable = find_wrk() if choice in ("auto", "wrk") else None
    if choice == "wrk" and executable is None:
        raise SystemExit("wrk is not installed (apt-get install wrk), use --generator soak")
    if executable is not None:
        generator = WrkGenerator(executable)
        return generator, generator.version
    why = "as asked" if choice == "soak" else "wrk is not installed"
    return soakgen.SoakGenerator(), f"the chatkeep soak engine (aiohttp; {why})"


def _say(text: str) -> None:
    print(text, flush=True)


def _median_result(results: list[LoadResult]) -> LoadResult:
    """The median of each number over rounds (one round: that round)."""
    if len(results) == 1:
        return results[0]
    seconds = statistics.median(r.seconds for r in results)
    throughput = statistics.median(r.throughput for r in results)
    errors = statistics.median(r.errors for r in results)
    requests = round(throughput * seconds + errors)
    latency = {
        key: statistics.median(r.latency_ms[key] for r in results) for key in results[0].latency_ms
    }
    return LoadResult(
        generator=results[0].generator,
        requests=requests,
        errors=round(errors),
        seconds=seconds,
        latency_ms=latency,
        error_detail=dict(sum((Counter(r.error_detail) for r in results), Counter())),
    )


def _as_dict(results: list[LoadResult]) -> dict[str, Any]:
    """The median result, with every round's own numbers when there were several."""
    data = _median_result(results).as_dict()
    if len(results) > 1:
        data["rounds"] = [r.as_dict() for r in results]
    return data


def _describe(result: LoadResult) -> str:
    errors = f", {result.errors} errors {result.error_detail}" if result.errors else ""
    return (
        f"{result.throughput:8.0f} req/s  p50 {result.latency_ms['p50']:7.2f} ms  "
        f"p99 {result.latency_ms['p99']:7.2f} ms{errors}"
    )


def run_gateway(
    generator: LoadGenerator,
    fake: Server,
    chatkeep: Server,
    options: argparse.Namespace,
    problems: dict[str, str | None],
) -> list[dict[str, Any]]:
    """The passthrough against the direct backend, case by case, interleaved."""
    cases: list[dict[str, Any]] = []
    for stream in (False, True):
        kind = "stream" if stream else "json"
        targets = [
            (name, server)
            for name, server in (("direct", fake), ("chatkeep", chatkeep))
            if problems.get(f"passthrough-{kind}-{name}") is None
        ]
        for concurrency in (1, 32):
            measured: dict[str, list[LoadResult]] = {name: [] for name, _ in targets}
            for _ in range(options.rounds):
                for name, server in targets:
                    if options.warmup > 0:
                        generator.passthrough(
                            server.url,
                            model="fake",
                            stream=stream,
                            concurrency=concurrency,
                            seconds=options.warmup,
                        )
                    measured[name].append(
                        generator.passthrough(
                            server.url,
                            model="fake",
                            stream=stream,
                            concurrency=concurrency,
                            seconds=options.seconds,
                        )
                    )
            case: dict[str, Any] = {"stream": stream, "concurrency": concurrency}
            for name in ("direct", "chatkeep"):
                problem = problems.get(f"passthrough-{kind}-{name}")
                if problem is not None:
                    case[name] = {"problem": problem}
                    _say(f"  passthrough {kind} c={concurrency} {name}: not measured, {problem}")
            for name, results in measured.items():
                result = _median_result(results)
                case[name] = _as_dict(results)
                label = f"passthrough {'stream' if stream else 'json  '} c={concurrency:<2}"
                _say(f"  {label} {name:8} {_describe(result)}")
            cases.append(case)
    return cases


def run_ttft(
    fake: Server, chatkeep: Server, requests: int, problems: dict[str, str | None]
) -> dict[str, Any]:
    """Streams one at a time, read by a client that notes the first token's arrival."""
    found: dict[str, Any] = {"generator": "soak"}
    for name, server in (("direct", fake), ("chatkeep", chatkeep)):
        problem = problems.get(f"passthrough-stream-{name}")
        if problem is not None:
            found[name] = {"problem": problem}
            continue
        soakgen.time_to_first_token(server.url, model="fake", requests=min(100, requests))
        result = soakgen.time_to_first_token(server.url, model="fake", requests=requests)
        found[name] = result.as_dict()
        assert result.ttft_ms is not None
        _say(
            f"  TTFT stream c=1  {name:8} p50 {result.ttft_ms['p50']:.3f} ms  "
            f"p99 {result.ttft_ms['p99']:.3f} ms"
        )
    if problems.get("durable-stream") is not None:
        found["durable"] = {"problem": problems["durable-stream"]}
        return found
    durable = soakgen.time_to_first_token(
        chatkeep.url, model="fake", requests=max(100, requests // 2), durable=True
    )
    found["durable"] = durable.as_dict()
    if durable.ttft_ms is not None:
        _say(
            f"  TTFT durable c=1 chatkeep p50 {durable.ttft_ms['p50']:.3f} ms  "
            f"p99 {durable.ttft_ms['p99']:.3f} ms"
        )
    return found


def run_durable(
    generator: LoadGenerator,
    chatkeep: Server,
    work_dir: Path,
    options: argparse.Namespace,
    problems: dict[str, str | None],
) -> list[dict[str, Any]]:
    """Conversation sends: the fake backend behind them (a real model call), then echo."""
    cases: list[dict[str, Any]] = []
    shapes = [("fake", stream, c) for stream in (False, True) for c in (1, 32)]
    shapes += [("echo", False, 1), ("echo", False, 32)]
    for model, stream, concurrency in shapes:
        problem = problems.get(f"durable-{'stream' if stream else 'json'}")
        if problem is not None:
            _say(f"  durable {model} stream={stream} c={concurrency}: not measured, {problem}")
            cases.append(
                {"model": model, "stream": stream, "concurrency": concurrency, "problem": problem}
            )
            continue
        results = []
        for round_number in range(options.rounds):
            # Enough conversations that a lane rarely comes back to one it already filled.
            path = work_dir / f"conversations-{model}-{stream}-{concurrency}-{round_number}.txt"
            conversations = prepare.create_conversations(
                chatkeep.url,
                path,
                count=32 * 20,
                model=model,
                per_conversation=options.per_conversation,
            )
            results.append(
                generator.durable(
                    chatkeep.url,
                    conversations,
                    stream=stream,
                    concurrency=concurrency,
                    seconds=options.seconds,
                )
            )
        result = _median_result(results)
        label = f"durable {model:4} {'stream' if stream else 'json  '} c={concurrency:<2}"
        _say(f"  {label} {_describe(result)}")
        cases.append(
            {
                "model": model,
                "stream": stream,
                "concurrency": concurrency,
                "per_conversation": options.per_conversation,
                "result": _as_dict(results),
            }
        )
    return cases


def _say_boards(boards: dict[str, Any]) -> None:
    """The gateway boards' tables, for the parts that ran."""
    if "frontier" in boards:
        _say("\n" + frontier.table(boards["frontier"]))
    if "streams" in boards:
        _say("\n" + streams_report.table(boards["streams"]))
        _say("\n" + report.targets_table(streams_report.targets(boards["streams"])))
    if "burst" in boards:
        _say("\n" + burst.table(boards["burst"]))


def main(argv: list[str] | None = None) -> int:
    options = _options(argv)
    generator, generator_text = _generator(options.generator)
    _say(f"load generator: {generator_text}")
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        work_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="chatkeep-bench-")))
        machine_info = machine.describe(work_dir)
        _say(
            f"machine: {machine_info['cpu']}, {machine_info['logical_cpus']} CPUs, "
            f"Python {machine_info['python']}"
        )
        fake = processes.start_fake_llm(work_dir, tokens=16)
        stack.callback(fake.stop)
        chatkeep = processes.start_chatkeep(work_dir, fake.url, work_dir / "data", label="main")
        stack.callback(chatkeep.stop)
        _say(f"fake backend {fake.url}, chatkeep {chatkeep.url} (pid {chatkeep.pid})")

        startup_rss = chatkeep.rss()
        problems = prepare.check_replies(fake.url, chatkeep.url, model="fake")
        for key, problem in problems.items():
            if problem is not None:
                _say(f"  BROKEN {key}: {problem}")
        idle = resident.measure_idle(chatkeep, startup_rss)
        parts = {part.strip() for part in options.parts.split(",")}
        gateway: list[dict[str, Any]] = []
        ttft: dict[str, Any] | None = None
        durable: list[dict[str, Any]] = []
        if "gateway" in parts:
            gateway = run_gateway(generator, fake, chatkeep, options, problems)
            ttft = run_ttft(fake, chatkeep, options.ttft_requests, problems)
        if "durable" in parts:
            durable = run_durable(generator, chatkeep, work_dir, options, problems)
        after_load_rss = chatkeep.rss()
        boards: dict[str, Any] = {}
        if "frontier" in parts:
            boards["frontier"] = frontier.run_frontier(fake.url, chatkeep.url, work_dir, options)
        chatkeep.stop()
        kinds = [kind.strip() for kind in options.memory_runs.split(",") if kind.strip()]
        if "memory" not in parts:
            kinds = []
        memory_runs = [resident.run_memory(kind, fake, work_dir, options) for kind in kinds]
        if "streams" in parts:
            boards["streams"] = streams.run_streams_part(work_dir, options)
        if "burst" in parts:
            boards["burst"] = burst.run_burst(generator, fake, work_dir, options)

    gateway_rows = report.gateway_rows(gateway)
    durable_rows = report.durable_rows(durable, gateway)
    found = report.targets(gateway_rows, durable_rows, idle, memory_runs)
    results = {
        "version": 1,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "duration_s": round(time.monotonic() - started, 1),
        "command": " ".join(["bench/run.py", *(sys.argv[1:] if argv is None else argv)]),
        "machine": machine_info,
        "load_generator": {"name": generator.name, "description": generator_text},
        "settings": {
            "seconds_per_case": options.seconds,
            "warmup_seconds": options.warmup,
            "rounds": options.rounds,
            "reply_tokens": 16,
            "sqlite_synchronous": "FULL",
            "per_conversation": options.per_conversation,
            "memory_working_set": options.memory_working_set,
            "parts": options.parts,
        },
        "problems": {key: value for key, value in problems.items() if value is not None},
        "gateway": {"cases": gateway, "rows": gateway_rows, "ttft": ttft},
        "durable": {"cases": durable, "rows": durable_rows},
        "memory": {"idle": idle, "after_load_rss": after_load_rss, "runs": memory_runs},
        "targets": found,
    }
    if boards:
        boards["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)
        results["boards"] = boards
    options.output.parent.mkdir(parents=True, exist_ok=True)
    options.output.write_text(json.dumps(results, indent=2) + "\n")

    _say("")
    _say(report.gateway_table(gateway_rows, ttft))
    _say("")
    _say(report.durable_table(durable_rows))
    _say("")
    _say(report.memory_table(idle, memory_runs))
    _say("")
    _say(report.targets_table(found))
    _say_boards(boards)
    _say(f"\nraw results: {options.output}  ({results['duration_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
