"""The provider pool in numbers: its overhead, the tail hedging cuts, and failover.

    .venv/bin/python bench/pool.py --profile  # about 6 minutes

Three parts, each with its own fake backends (``chatkeep fake-llm``) and its own chatkeep
(``chatkeep serve``), started and stopped here:

1. overhead (`pool_overhead`): the ``/v1`` passthrough, JSON, c=1 and c=32, through a
   one-backend pool against today's plain model on the same backend (wrk); with
   ``--profile``, also the pool's own frames per request (py-spy, `pool_profile`);
2. tail (`pool_tail`): p99 time to first token of two backends slow 5% of the time
   (400 ms instead of 10 ms), without hedging, with a fixed hedge delay (80 ms: above
   what a fast reply takes on a loaded machine, or the budget goes to fast replies) and
   adaptive (streaming client);
3. failover (`pool_failover`): success and p99 while one of three backends is killed
   (SIGKILL) and restarted on its port every 10 s (streaming client).

Prints a markdown table per part and writes every raw number to
``bench/results/pool.json``. The machine may be shared: compare numbers within one run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import machine
from pool_failover import failover_table, run_failover
from pool_overhead import overhead_rows, overhead_table, run_overhead
from pool_profile import find_py_spy
from pool_tail import run_tail, tail_table
from wrk import WrkGenerator, find_wrk

RESULTS = Path(__file__).parent / "results" / "pool.json"
PARTS = ("overhead", "tail", "failover")


def _options(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--parts", default=",".join(PARTS), help="comma-separated: overhead, tail, failover")
    add("--rounds", type=int, default=3, help="interleaved rounds (overhead and tail)")
    add("--seconds", type=float, default=5.0, help="overhead: length of each wrk run")
    add("--warmup", type=float, default=1.0, help="overhead: unmeasured wrk run before each")
    add("--tail-requests", type=int, default=2000, help="tail: replies per model per round")
    add("--tail-warmup", type=int, default=300, help="tail: unmeasured replies per model")
    add("--tail-concurrency", type=int, default=8, help="tail: client lanes")
    add("--first-token-ms", type=float, default=10.0, help="tail: a fast first token")
    add("--slow-rate", type=float, default=0.05, help="tail: share of slow first tokens")
    add("--slow-first-token-ms", type=float, default=400.0, help="tail: a slow first token")
    add("--hedge-after-ms", type=float, default=80.0, help="tail: the fixed hedge delay")
    add("--failover-seconds", type=float, default=40.0, help="failover: load with kills")
    add("--failover-steady", type=float, default=10.0, help="failover: load without kills")
    add("--failover-concurrency", type=int, default=8, help="failover: lanes per path")
    add("--failover-first-token-ms", type=float, default=20.0, help="failover: backend TTFT")
    add("--failover-delay-ms", type=float, default=2.0, help="failover: between tokens")
    add("--kill-every", type=float, default=10.0, help="failover: seconds between kills")
    add("--down-seconds", type=float, default=2.0, help="failover: dead before the restart")
    add(
        "--profile",
        action="store_true",
        help="overhead: one more run of each model under py-spy (the pool's frames per request)",
    )
    add("--output", type=Path, default=RESULTS, help="where the JSON goes")
    options = parser.parse_args(argv)
    parts = {part.strip() for part in options.parts.split(",") if part.strip()}
    if not parts or not parts <= set(PARTS):
        parser.error(f"--parts takes some of {', '.join(PARTS)}")
    if options.rounds < 1 or options.tail_requests < 100 or options.seconds <= 0:
        parser.error("--rounds must be >= 1, --tail-requests >= 100, --seconds positive")
    options.parts = [part for part in PARTS if part in parts]
    options.py_spy = find_py_spy() if options.profile else None
    if options.profile and options.py_spy is None:
        parser.error("--profile needs py-spy (pip install -e '.[profile]')")
    return options


def _say(text: str) -> None:
    print(text, flush=True)


def main(argv: list[str] | None = None) -> int:
    options = _options(argv)
    executable = find_wrk()
    if "overhead" in options.parts and executable is None:
        print("wrk is not installed (apt-get install -y wrk)", file=sys.stderr)
        return 2
    started = time.monotonic()
    found: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        work_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="chatkeep-pool-")))
        machine_info = machine.describe(work_dir)
        _say(f"machine: {machine_info['cpu']}, {machine_info['logical_cpus']} CPUs")
        if "overhead" in options.parts:
            assert executable is not None
            _say("overhead: one-backend pool against the plain model")
            found["overhead"] = run_overhead(WrkGenerator(executable), work_dir, options)
            found["overhead"]["rows"] = overhead_rows(found["overhead"])
        if "tail" in options.parts:
            share = f"{options.slow_rate:.0%}"
            _say(f"tail: two backends slow {share} of the time, hedging off / fixed / adaptive")
            found["tail"] = run_tail(work_dir, options)
        if "failover" in options.parts:
            _say("failover: one of three backends killed and restarted in turn")
            found["failover"] = run_failover(work_dir, options)
    results = {
        "version": 1,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "duration_s": round(time.monotonic() - started, 1),
        "command": " ".join(["bench/pool.py", *(sys.argv[1:] if argv is None else argv)]),
        "machine": machine_info,
        **found,
    }
    options.output.parent.mkdir(parents=True, exist_ok=True)
    options.output.write_text(json.dumps(results, indent=2) + "\n")
    tables = {"overhead": overhead_table, "tail": tail_table, "failover": failover_table}
    for part in options.parts:
        _say(f"\n{part}\n")
        _say(tables[part](found[part]))
    _say(f"\nraw results: {options.output}  ({results['duration_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
