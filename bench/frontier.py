"""The request-rate frontier: the highest offered rate whose p99 stays under a bound.

Gateway boards rank a gateway by the load it takes before its tail gives way, at several
latency bounds. For each target (the fake backend directly, chatkeep's passthrough, the
durable send; JSON answers) the offered rate climbs a geometric ladder, each step an
open-loop run (`frontier_load.offer`: latency from each request's due time), ``--rounds``
times with the targets interleaved, and the median of the rounds is the step's number.
A target stops climbing once a step's p99 passes the largest bound (or its answers
failed) after an earlier step was under it, or two steps in a row. A bound's frontier is
the top of the first unbroken run of steps under it (`frontier`).
"""

from __future__ import annotations

import asyncio
import math
import statistics
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import orjson

import prepare
from frontier_load import RateRun, Requests, closed_loop_ceiling, offer

try:
    import uvloop
except ImportError:  # the generator runs on asyncio's own loop, at a higher cost
    uvloop = None

T = TypeVar("T")

#: p99 bounds, in milliseconds, each with its own frontier.
BOUNDS_MS = (1.0, 5.0, 10.0, 50.0)
PROMPT = "Tell me something about the number 42."


def ladder(start: float, factor: float, ceiling: float) -> list[float]:
    """Rates from ``start`` up to ``ceiling`` (included when reached), each ``factor`` higher."""
    if start <= 0 or factor <= 1 or ceiling < start:
        raise ValueError("need 0 < start <= ceiling and factor > 1")
    steps = math.floor(math.log(ceiling / start) / math.log(factor) + 1e-9)
    return [round(start * factor**n, 1) for n in range(steps + 1)]


def step_passes(step: dict[str, Any], bound_ms: float) -> bool:
    """A step is under a bound when nothing failed and its p99 is below the bound."""
    p99 = step["latency_ms"]["p99"]
    return not step["errors"] and p99 is not None and p99 < bound_ms


def frontier(steps: Sequence[dict[str, Any]], bound_ms: float) -> float | None:
    """The top of the first unbroken run of steps under ``bound_ms``; None when none is.

    Steps below the run do not count against it: on a virtual machine the lowest rates
    can be the slowest (an idle vCPU is slow to wake). Steps above its end do not count
    for it: a step under the bound after one that was not is luck, not capacity.
    """
    best: float | None = None
    for step in sorted(steps, key=lambda s: s["offered_rps"]):
        if step_passes(step, bound_ms):
            best = step["offered_rps"]
        elif best is not None:
            break
    return best


def leaves_the_climb(steps: Sequence[dict[str, Any]]) -> bool:
    """Whether a target's ladder ends after ``steps``: once it has failed the largest bound
    after passing it, or twice in a row (higher rates will not bring its tail back)."""
    passes = [step_passes(step, max(BOUNDS_MS)) for step in steps]
    if not passes or passes[-1]:
        return False
    return any(passes) or (len(passes) >= 2 and not passes[-2])


def _passthrough_requests() -> Requests:
    body = orjson.dumps({"model": "fake", "messages": [{"role": "user", "content": PROMPT}]})
    return lambda lane, k: ("/v1/chat/completions", body)


def _durable_requests(ids: list[str], lanes: int, per_conversation: int) -> Requests:
    """Lane ``i`` sends to its own conversations, ``per_conversation`` sends to each."""
    body = orjson.dumps({"content": PROMPT, "stream": False})
    per_lane = len(ids) // lanes

    def make(lane: int, k: int) -> tuple[str, bytes]:
        conversation = ids[lane * per_lane + (k // per_conversation) % per_lane]
        return f"/api/conversations/{conversation}/messages", body

    return make


def _say(text: str) -> None:
    print(text, flush=True)


def run_loop(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop when installed: the generator's cost per request is its ceiling."""
    if uvloop is not None:
        return uvloop.run(coroutine)
    return asyncio.run(coroutine)


def median_step(rounds: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One step from its rounds: the median of each number, every round's errors."""
    errors: Counter[str] = Counter()
    for one in rounds:
        errors.update(one["errors"])

    def middle(values: list[float | None]) -> float | None:
        known = [v for v in values if v is not None]
        return statistics.median(known) if known else None

    return {
        "offered_rps": rounds[0]["offered_rps"],
        "achieved_rps": middle([r["achieved_rps"] for r in rounds]),
        "errors": dict(errors),
        "latency_ms": {
            key: middle([r["latency_ms"][key] for r in rounds]) for key in rounds[0]["latency_ms"]
        },
        "rounds": list(rounds),
    }


def _describe(step: dict[str, Any]) -> str:
    latency = step["latency_ms"]
    errors = f"  errors {step['errors']}" if step["errors"] else ""
    return (
        f"offered {step['offered_rps']:7.0f}/s  answered {step['achieved_rps']:7.0f}/s  "
        f"p50 {latency['p50'] or 0:8.2f} ms  p99 {latency['p99'] or 0:8.2f} ms{errors}"
    )


@dataclass(frozen=True)
class Target:
    """Where a ladder is climbed, and what it sends there at a rate for a length of time."""

    name: str
    base_url: str
    requests: Callable[[float, float], Requests]


def climb(
    targets: Sequence[Target],
    *,
    rates: Sequence[float],
    rounds: int,
    seconds: float,
    min_samples: int,
    lanes: int,
) -> dict[str, dict[str, Any]]:
    """Climb every target's ladder together, rounds interleaved, until each fails.

    At each rate every target still climbing gets its runs back to back, so the noise of
    a shared machine hits them alike; a target leaves the climb as `leaves_the_climb` says.
    """
    for target in targets:
        warm = target.requests(rates[0], 1.0)
        run_loop(offer(target.base_url, warm, rate=rates[0], seconds=1.0, lanes=lanes))
    steps: dict[str, list[dict[str, Any]]] = {target.name: [] for target in targets}
    climbing = list(targets)
    for rate in rates:
        if not climbing:
            break
        length = max(seconds, min_samples / rate)
        runs: dict[str, list[dict[str, Any]]] = {target.name: [] for target in climbing}
        for _ in range(rounds):
            for target in climbing:
                requests = target.requests(rate, length)
                run: RateRun = run_loop(
                    offer(target.base_url, requests, rate=rate, seconds=length, lanes=lanes)
                )
                runs[target.name].append(run.as_dict())
        for target in list(climbing):
            step = median_step(runs[target.name])
            steps[target.name].append(step)
            _say(f"  frontier {target.name:11} {_describe(step)}")
            if leaves_the_climb(steps[target.name]):
                climbing.remove(target)
    return {
        name: {
            "steps": found,
            "frontier_rps": {f"{bound:g}": frontier(found, bound) for bound in BOUNDS_MS},
        }
        for name, found in steps.items()
    }


def generator_ceiling(base_url: str, *, lanes: int, seconds: float) -> dict[str, Any]:
    """This client's most answers a second against ``base_url``, and the CPU it used."""
    cpu = time.process_time()
    wall = time.perf_counter()
    rps = run_loop(
        closed_loop_ceiling(base_url, _passthrough_requests(), lanes=lanes, seconds=seconds)
    )
    used = (time.process_time() - cpu) / (time.perf_counter() - wall)
    _say(
        f"  frontier generator ceiling (closed loop, {lanes} connections, direct backend): "
        f"{rps:,.0f} req/s, the generator using {used:.0%} of a core"
    )
    return {"closed_loop_rps": round(rps, 1), "generator_cpu_share": round(used, 3)}


def run_frontier(
    direct_url: str, chatkeep_url: str, work_dir: Path, options: Any
) -> dict[str, Any]:
    """The three targets' ladders, and the generator's own ceiling, in one run."""
    rates = ladder(options.frontier_start, options.frontier_factor, options.frontier_max)
    lanes = options.frontier_lanes
    per_conversation = options.per_conversation
    made = [0]

    def passthrough(rate: float, length: float) -> Requests:
        return _passthrough_requests()

    def durable(rate: float, length: float) -> Requests:
        # Enough conversations for this run's sends, each lane on its own.
        per_lane = math.ceil((math.ceil(rate * length / lanes) + 1) / per_conversation)
        made[0] += 1
        conversations = prepare.create_conversations(
            chatkeep_url,
            work_dir / f"frontier-conversations-{made[0]}.txt",
            count=per_lane * lanes,
            model="fake",
            per_conversation=per_conversation,
        )
        ids = conversations.path.read_text().split()
        return _durable_requests(ids, lanes, per_conversation)

    found: dict[str, Any] = {
        "bounds_ms": list(BOUNDS_MS),
        "lanes": lanes,
        "rounds": options.rounds,
        "seconds_per_step": options.frontier_seconds,
        "min_samples_per_step": options.frontier_min_samples,
        "ladder": rates,
        "event_loop": "uvloop" if uvloop is not None else "asyncio",
        "generator": generator_ceiling(direct_url, lanes=lanes, seconds=3.0),
    }
    found.update(
        climb(
            [
                Target("direct", direct_url, passthrough),
                Target("passthrough", chatkeep_url, passthrough),
                Target("durable", chatkeep_url, durable),
            ],
            rates=rates,
            rounds=options.rounds,
            seconds=options.frontier_seconds,
            min_samples=options.frontier_min_samples,
            lanes=lanes,
        )
    )
    return found


def _rate(value: float | None) -> str:
    return "none" if value is None else f"{value:,.0f}"


def _ratio(value: float | None, direct: float | None) -> str:
    return "n/a" if value is None or not direct else f"{value / direct:.2f}"


def table(found: dict[str, Any]) -> str:
    """The frontier at each bound, then every step of the ladders (medians of rounds)."""
    generator = found["generator"]
    lines = [
        "| highest rate with p99 under | direct backend (req/s) | chatkeep passthrough "
        "(req/s) | / direct | durable send (req/s) | / direct |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for bound in found["bounds_ms"]:
        key = f"{bound:g}"
        direct = found["direct"]["frontier_rps"][key]
        passthrough = found["passthrough"]["frontier_rps"][key]
        durable = found["durable"]["frontier_rps"][key]
        lines.append(
            f"| {key} ms | {_rate(direct)} | {_rate(passthrough)} | {_ratio(passthrough, direct)} "
            f"| {_rate(durable)} | {_ratio(durable, direct)} |"
        )
    lines += [
        "",
        f"Open loop, {found['lanes']} connections, {found['rounds']} round(s) a step "
        f"(median), at least {found['seconds_per_step']:g} s and "
        f"{found['min_samples_per_step']} requests a step, from {found['ladder'][0]:,.0f}/s "
        'up; "none": no step was under the bound. The generator '
        f"({found['event_loop']}) answers {generator['closed_loop_rps']:,.0f} req/s closed "
        f"loop against the direct backend, using {generator['generator_cpu_share']:.0%} "
        "of a core.",
        "",
        "| offered (req/s) | direct p50 / p99 (ms) | passthrough p50 / p99 (ms) "
        "| durable p50 / p99 (ms) |",
        "|---:|---:|---:|---:|",
    ]
    by_rate: dict[float, dict[str, dict[str, Any]]] = {}
    for name in ("direct", "passthrough", "durable"):
        for step in found[name]["steps"]:
            by_rate.setdefault(step["offered_rps"], {})[name] = step
    for rate in sorted(by_rate):
        cells = []
        for name in ("direct", "passthrough", "durable"):
            step = by_rate[rate].get(name)
            if step is None:
                cells.append("")
                continue
            latency = step["latency_ms"]
            errors = f" ({sum(step['errors'].values())} errors)" if step["errors"] else ""
            pair = " / ".join(
                "n/a" if latency[key] is None else f"{latency[key]:.2f}" for key in ("p50", "p99")
            )
            cells.append(pair + errors)
        lines.append(f"| {rate:,.0f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
