"""Memory of a real chatkeep server under three loads, measured from outside with psutil.

Scenarios (each selectable; all run when none is named):

``--working-set``
    100 000 stored conversations, each touched by one send through the HTTP API; the
    server's RSS against the working-set bound, once per ``--working-set-bytes`` value.
``--streams``
    1 000 concurrent streamed replies read slowly or not at all: peak RSS, and whether
    every reply was committed.
``--overload``
    Bursts of 10x the admission capacity at once (``--bursts``, 3): the share answered 503
    (with Retry-After), RSS before, at the peak and after each, and what storage holds.

Results print as tables and go to ``bench/results/memory.json`` (a run of some scenarios
keeps the others' earlier results in the file). ``--env NAME=VALUE`` adds a server setting
to every run and ``--label`` keeps such a run's results apart; ``--streams-profile SECONDS``
also asks the server for a ``tracemalloc`` profile while the streams run.

    .venv/bin/python bench/memory.py
    .venv/bin/python bench/memory.py --working-set --conversations 100000
    .venv/bin/python bench/memory.py --streams --streams-count 1000
    .venv/bin/python bench/memory.py --overload
    .venv/bin/python bench/memory.py --streams --streams-profile 8 --label profiled
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from chatkeep.settings import parse_size
from memory_clients import (
    SendTally,
    check_commits,
    create_conversations,
    get_json,
    get_json_once,
    percentile,
    post_json,
    run_bounded,
    send_message,
    session,
    wait_until_idle,
)
from memory_server import (
    MIB,
    RssSampler,
    Server,
    add_run_options,
    format_table,
    load_previous,
    machine,
    mib,
    parse_env,
    raise_fd_limit,
    result_key,
    revision,
    write_results,
)
from memory_streams import StreamLoad, open_streams

HERE = Path(__file__).resolve().parent
#: Targets from the working-set issue.
OTHER_BYTES_TARGET = 80 * MIB
STREAMS_PEAK_TARGET = 250 * MIB
#: The text each touch sends (the echo model quotes it back).
TOUCH_TEXT = "Hello! Please remember that my favourite colour is teal and my cat is called Miso."


# -- scenario 1: working set with many stored conversations ---------------------------------


def populate_template(root: Path, count: int) -> tuple[Path, list[str]]:
    """Create ``count`` conversations in a fresh data directory, in a separate process."""
    data_dir = root / "template"
    ids_file = root / "ids.txt"
    subprocess.run(
        [
            sys.executable,
            str(HERE / "memory_populate.py"),
            str(data_dir),
            str(count),
            str(ids_file),
        ],
        check=True,
    )
    return data_dir, ids_file.read_text().split()


async def touch_all(url: str, ids: list[str], concurrency: int, limit_seconds: float) -> SendTally:
    """Send one message to every conversation, ``concurrency`` at a time."""
    tally = SendTally()
    async with session(concurrency) as client:

        async def touch(conversation_id: str) -> None:
            await send_message(client, url, conversation_id, TOUCH_TEXT, tally)
            if tally.total % 10_000 == 0:
                print(f"  touched {tally.total}", flush=True)

        await run_bounded(
            ids, touch, concurrency=concurrency, deadline=time.monotonic() + limit_seconds
        )
    return tally


async def working_set_run(
    template: Path, ids: list[str], root: Path, size: str, args: argparse.Namespace
) -> dict[str, Any]:
    """One server with working-set bound ``size``: touch every conversation, read RSS."""
    data_dir = root / f"ws-{size}"
    shutil.copytree(template, data_dir)
    server = Server(data_dir, {**args.env, "CHATKEEP_WORKING_SET_BYTES": size})
    server.start()
    try:
        await asyncio.sleep(1.0)
        rss_idle, uss_idle = server.rss(), server.uss()
        began = time.monotonic()
        async with RssSampler(server, interval=0.5) as sampler:
            tally = await touch_all(server.url, ids, args.concurrency, args.timeout)
        seconds = time.monotonic() - began
        await asyncio.sleep(2.0)
        server.ensure_alive()
        rss_after, uss_after = server.rss(), server.uss()
        async with session(2) as client:
            stats = await get_json(client, f"{server.url}/admin/stats")
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    working_set = stats["caches"]["working_set"]
    bound = int(working_set["maxsize"])
    return {
        "working_set_bytes": bound,
        "extra_env": args.env,
        "conversations": len(ids),
        "sends": dict(tally.statuses),
        "seconds": round(seconds, 1),
        "sends_per_second": round(tally.total / seconds, 1),
        "rss_idle": rss_idle,
        "uss_idle": uss_idle,
        "rss_peak": sampler.peak,
        "rss_after": rss_after,
        "uss_after": uss_after,
        "working_set": working_set,
        "rss_minus_bound": rss_after - bound,
        "rss_minus_held": rss_after - int(working_set["currsize"]),
        "target_other_bytes": OTHER_BYTES_TARGET,
        "target_met": rss_after - bound < OTHER_BYTES_TARGET
        and sampler.peak - bound < OTHER_BYTES_TARGET,
    }


async def scenario_working_set(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Scenario 1, once per working-set size."""
    with tempfile.TemporaryDirectory(prefix="chatkeep-bench-") as tmp:
        root = Path(tmp)
        print(f"populating {args.conversations} conversations", flush=True)
        template, ids = populate_template(root, args.conversations)
        runs = []
        for size in args.working_set_bytes:
            print(f"working set {size}: touching {len(ids)} conversations", flush=True)
            runs.append(await working_set_run(template, ids, root, size, args))
    return runs


def working_set_table(runs: list[dict[str, Any]]) -> str:
    """Scenario 1 as a table, sizes in MiB."""
    rows = [
        [
            mib(run["working_set_bytes"]),
            run["conversations"],
            run["sends"].get("200", 0),
            run["working_set"]["items"],
            mib(run["working_set"]["currsize"]),
            mib(run["rss_idle"]),
            mib(run["rss_peak"]),
            mib(run["rss_after"]),
            mib(run["rss_minus_bound"]),
            "met" if run["target_met"] else "MISSED",
        ]
        for run in runs
    ]
    headers = [
        "bound MiB",
        "convs",
        "sends 200",
        "ws items",
        "ws held MiB",
        "RSS idle",
        "RSS peak",
        "RSS after",
        "RSS-bound",
        "<80 MiB",
    ]
    return format_table(headers, rows)


# -- scenario 2: many streamed replies with slow readers ------------------------------------


async def profile_during(url: str, seconds: float) -> dict[str, Any] | None:
    """``POST /admin/memory/profile`` for ``seconds`` (None when ``seconds`` is 0)."""
    if seconds <= 0:
        return None
    async with session(1) as client:
        profile: dict[str, Any] = await post_json(
            client, f"{url}/admin/memory/profile", {"seconds": seconds, "top": 15}
        )
    return {**profile, "top": profile["top"][:15]}


async def stream_and_wait(
    server: Server, ids: list[str], words: str, args: argparse.Namespace
) -> dict[str, Any]:
    """Open every stream, wait until every reply ended; RSS and what the clients saw."""
    rss_before = server.rss()
    began = time.monotonic()
    profiling = asyncio.create_task(profile_during(server.url, args.streams_profile))
    async with RssSampler(server) as sampler:
        load = StreamLoad(server.url, words, slow_share=args.slow_share)
        async with open_streams(load, ids) as opened:
            stats = await wait_until_idle(server.url, limit_seconds=args.timeout)
            seconds = time.monotonic() - began
    profile = await profiling
    await asyncio.sleep(1.0)
    server.ensure_alive()
    return {
        "readers": opened.as_dict(),
        "seconds_until_all_committed": round(seconds, 1),
        "rss_before": rss_before,
        "rss_peak": sampler.peak,
        "rss_after_close": server.rss(),
        "server_streams": stats["streams"],
        "server_peak": stats["peak"],
        "idle": stats["idle"],
        "profile": profile,
    }


async def scenario_streams(args: argparse.Namespace) -> dict[str, Any]:
    """Scenario 2: ``--streams-count`` streamed replies at once, read slowly or not at all."""
    count = args.streams_count
    limit = raise_fd_limit(4 * count + 1024)
    words = " ".join(f"w{n % 1000}" for n in range(args.stream_words))
    env = {
        "CHATKEEP_MAX_INFLIGHT_GENERATIONS": str(count),
        "CHATKEEP_MAX_QUEUED_GENERATIONS": str(count),
        "CHATKEEP_ECHO_DELAY_MS": str(args.stream_delay_ms),
        "CHATKEEP_MEMORY_PROFILE_MAX_SECONDS": str(max(60.0, args.streams_profile)),
    }
    with tempfile.TemporaryDirectory(prefix="chatkeep-bench-") as tmp:
        server = Server(Path(tmp) / "streams", {**args.env, **env})
        server.start()
        try:
            ids = await create_conversations(server.url, count)
            await asyncio.sleep(1.0)
            run = await stream_and_wait(server, ids, words, args)
            check = await check_commits(server.url, ids, f"echo: {words}")
        finally:
            server.stop()
    committed = (
        check.message_counts.get(2, 0) == count
        and check.reply_statuses.get("complete", 0) == count
        and check.wrong_content == 0
    )
    return {
        "streams": count,
        "extra_env": args.env,
        "fd_limit": limit,
        "reply_words": args.stream_words,
        "echo_delay_ms": args.stream_delay_ms,
        "slow_share": args.slow_share,
        **run,
        "commits": check.as_dict(),
        "every_reply_committed": committed,
        "target_peak": STREAMS_PEAK_TARGET,
        "target_met": run["rss_peak"] < STREAMS_PEAK_TARGET and committed,
    }


def profile_lines(profile: dict[str, Any] | None) -> str:
    """The lines a profile names, one per line (empty without a profile)."""
    if not profile:
        return ""
    lines = [
        f"{mib(line['size_diff'])} MiB  {line['count_diff']:>7}  "
        f"{Path(line['file']).name}:{line['line']}"
        for line in profile["top"]
    ]
    return "\nprofile (growth while tracing):\n" + "\n".join(lines)


def streams_table(run: dict[str, Any]) -> str:
    """Scenario 2 as a table."""
    commits = run["commits"]
    row = [
        run["streams"],
        run["readers"]["opened"],
        run["server_peak"]["running_replies"],
        f"{run['reply_words']}x{run['echo_delay_ms']}ms",
        run["seconds_until_all_committed"],
        mib(run["rss_before"]),
        mib(run["rss_peak"]),
        mib(run["rss_after_close"]),
        commits["message_counts"].get("2", 0),
        commits["reply_statuses"].get("complete", 0),
        "met" if run["target_met"] else "MISSED",
    ]
    headers = [
        "streams",
        "opened",
        "max running",
        "reply",
        "seconds",
        "RSS before",
        "RSS peak",
        "RSS after",
        "count==2",
        "complete",
        "<250 MiB+all",
    ]
    return format_table(headers, [row]) + profile_lines(run.get("profile"))


# -- scenario 3: an overload burst ----------------------------------------------------------


async def fire_burst(url: str, ids: list[str], text: str) -> tuple[SendTally, float]:
    """Send one message to each conversation, all at once; return the tally and seconds."""
    tally = SendTally()
    async with session(0) as client:
        began = time.monotonic()
        await asyncio.wait_for(
            asyncio.gather(*(send_message(client, url, cid, text, tally) for cid in ids)),
            timeout=600,
        )
    return tally, time.monotonic() - began


async def burst_once(server: Server, ids: list[str], text: str, limit: float) -> dict[str, Any]:
    """One burst: every conversation gets a send at once; statuses and RSS around it."""
    rss_before = server.rss()
    async with RssSampler(server) as sampler:
        tally, seconds = await fire_burst(server.url, ids, text)
        stats = await wait_until_idle(server.url, limit_seconds=limit)
    await asyncio.sleep(1.0)
    server.ensure_alive()
    if not stats["idle"]:
        raise RuntimeError(f"replies still running {limit:g} s after the burst")
    latencies = tally.latencies
    return {
        "statuses": dict(tally.statuses),
        "share_503": round(tally.statuses.get("503", 0) / len(ids), 3),
        "retry_after": dict(tally.retry_after),
        "latency_503_p50": percentile(latencies.get("503", []), 0.5),
        "latency_503_p99": percentile(latencies.get("503", []), 0.99),
        "latency_200_p50": percentile(latencies.get("200", []), 0.5),
        "latency_200_max": percentile(latencies.get("200", []), 1.0),
        "burst_seconds": round(seconds, 2),
        "rss_before": rss_before,
        "rss_peak": sampler.peak,
        "rss_after": server.rss(),
    }


async def scenario_overload(args: argparse.Namespace) -> dict[str, Any]:
    """Scenario 3: ``--burst-factor`` times the admission capacity at once, ``--bursts`` times."""
    capacity = args.burst_inflight + args.burst_queued
    count = capacity * args.burst_factor
    raise_fd_limit(4 * count + 1024)
    text = " ".join(f"word{n}" for n in range(args.burst_words))
    env = {
        "CHATKEEP_MAX_INFLIGHT_GENERATIONS": str(args.burst_inflight),
        "CHATKEEP_MAX_QUEUED_GENERATIONS": str(args.burst_queued),
        "CHATKEEP_ECHO_DELAY_MS": str(args.burst_delay_ms),
    }
    with tempfile.TemporaryDirectory(prefix="chatkeep-bench-") as tmp:
        server = Server(Path(tmp) / "overload", {**args.env, **env})
        server.start()
        try:
            ids = await create_conversations(server.url, count)
            await asyncio.sleep(1.0)
            rss_start = server.rss()
            bursts = [await burst_once(server, ids, text, args.timeout) for _ in range(args.bursts)]
            check = await check_commits(server.url, ids, None)
            stats = await get_json_once(server.url, "/admin/stats")
        finally:
            server.stop()
    accepted = sum(b["statuses"].get("200", 0) for b in bursts)
    stored = sum(int(k) * v for k, v in check.message_counts.items())
    return {
        "max_inflight": args.burst_inflight,
        "max_queued": args.burst_queued,
        "extra_env": args.env,
        "sends_per_burst": count,
        "echo_delay_ms": args.burst_delay_ms,
        "reply_words": args.burst_words,
        "rss_start": rss_start,
        "bursts": bursts,
        "rejected_by_server": stats["generations"]["rejected"],
        "messages_stored": stored,
        "messages_expected": 2 * accepted,
        "commits": check.as_dict(),
    }


def overload_table(run: dict[str, Any]) -> str:
    """Scenario 3 as a table, one row per burst."""
    rows = []
    for number, burst in enumerate(run["bursts"], start=1):
        statuses = burst["statuses"]
        others = {k: v for k, v in statuses.items() if k not in ("200", "503")}
        rows.append(
            [
                number,
                f"{run['max_inflight']}+{run['max_queued']}",
                run["sends_per_burst"],
                statuses.get("200", 0),
                statuses.get("503", 0),
                f"{100 * burst['share_503']:.1f}%",
                sum(burst["retry_after"].values()),
                json.dumps(others) if others else "none",
                mib(burst["rss_before"]),
                mib(burst["rss_peak"]),
                mib(burst["rss_after"]),
            ]
        )
    headers = [
        "burst",
        "capacity",
        "sends",
        "200",
        "503",
        "503 share",
        "Retry-After",
        "other",
        "RSS before",
        "RSS peak",
        "RSS after",
    ]
    return format_table(headers, rows)


# -- command line ---------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; no scenario flag means all of them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--working-set", action="store_true", help="run scenario 1")
    parser.add_argument("--streams", action="store_true", help="run scenario 2")
    parser.add_argument("--overload", action="store_true", help="run scenario 3")
    parser.add_argument("--conversations", type=int, default=100_000)
    parser.add_argument(
        "--working-set-bytes",
        nargs="+",
        default=["64MiB", "8MiB"],
        help="one scenario-1 run per bound (CHATKEEP_WORKING_SET_BYTES values)",
    )
    parser.add_argument("--concurrency", type=int, default=32, help="sends in flight (1)")
    parser.add_argument("--streams-count", type=int, default=1000)
    parser.add_argument("--stream-words", type=int, default=200, help="words per reply (2)")
    parser.add_argument("--stream-delay-ms", type=float, default=60.0, help="echo delay (2)")
    parser.add_argument("--slow-share", type=float, default=0.5, help="readers that read (2)")
    parser.add_argument(
        "--streams-profile",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="also run POST /admin/memory/profile for SECONDS from the start (2)",
    )
    parser.add_argument("--burst-inflight", type=int, default=32)
    parser.add_argument("--burst-queued", type=int, default=64)
    parser.add_argument("--burst-factor", type=int, default=10)
    parser.add_argument("--burst-words", type=int, default=20)
    parser.add_argument("--burst-delay-ms", type=float, default=50.0)
    parser.add_argument("--bursts", type=int, default=3, help="bursts in a row (3)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per phase")
    add_run_options(parser, env_example="CHATKEEP_MAX_RETAINED_STREAMS=0")
    args = parser.parse_args(argv)
    args.env = parse_env(args.env)
    for size in args.working_set_bytes:
        parse_size(size)  # fail now, not after populating
    if not (args.working_set or args.streams or args.overload):
        args.working_set = args.streams = args.overload = True
    return args


async def main(args: argparse.Namespace) -> dict[str, Any]:
    """Run the chosen scenarios, print their tables and return the results."""
    results = load_previous("memory.json")
    results["machine"] = machine()
    rev = revision()
    if args.working_set:
        runs = await scenario_working_set(args)
        results[result_key("working_set", args.label)] = {"revision": rev, "runs": runs}
        print(working_set_table(runs), flush=True)
    if args.streams:
        streams = {"revision": rev, **await scenario_streams(args)}
        results[result_key("streams", args.label)] = streams
        print(streams_table(streams), flush=True)
    if args.overload:
        overload = {"revision": rev, **await scenario_overload(args)}
        results[result_key("overload", args.label)] = overload
        print(overload_table(overload), flush=True)
    return results


if __name__ == "__main__":
    options = parse_args()
    output = asyncio.run(main(options))
    print(f"wrote {write_results('memory', output)}")
