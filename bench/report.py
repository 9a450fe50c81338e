"""The benchmark's tables (markdown, ratios chatkeep / direct backend) and its targets."""

from __future__ import annotations

from typing import Any

MIB = 1024 * 1024

#: The targets of the benchmark, each checked against the measured numbers.
TARGET_THROUGHPUT_RATIO = 0.25
TARGET_ADDED_P50_MS = 1.0
TARGET_DURABLE_RPS = 1000.0
TARGET_IDLE_RSS = 60 * MIB
TARGET_SLOPE = 100.0


def _fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _stat(result: dict[str, Any], key: str) -> float | None:
    """A latency statistic of a measured result; ``None`` for a case not measured."""
    latency = result.get("latency_ms")
    return None if latency is None else float(latency[key])


def _minus(left: float | None, right: float | None) -> float | None:
    return None if left is None or right is None else left - right


def _over(left: float | None, right: float | None) -> float | None:
    return None if left is None or not right else left / right


def gateway_rows(gateway: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per case: throughputs, their ratio, and the latency chatkeep adds."""
    rows = []
    for case in gateway:
        direct, through = case["direct"], case["chatkeep"]
        problem = "; ".join(
            f"{name}: {case[name]['problem']}"
            for name in ("direct", "chatkeep")
            if "problem" in case[name]
        )
        direct_rps, through_rps = direct.get("throughput_rps"), through.get("throughput_rps")
        rows.append(
            {
                "case": f"{'streamed' if case['stream'] else 'JSON'}, c={case['concurrency']}",
                "stream": case["stream"],
                "concurrency": case["concurrency"],
                "direct_rps": direct_rps,
                "chatkeep_rps": through_rps,
                "throughput_ratio": _over(through_rps, direct_rps),
                "direct_p50_ms": _stat(direct, "p50"),
                "chatkeep_p50_ms": _stat(through, "p50"),
                "added_p50_ms": _minus(_stat(through, "p50"), _stat(direct, "p50")),
                "direct_p99_ms": _stat(direct, "p99"),
                "chatkeep_p99_ms": _stat(through, "p99"),
                "added_p99_ms": _minus(_stat(through, "p99"), _stat(direct, "p99")),
                "errors": direct.get("errors", 0) + through.get("errors", 0),
                "problem": problem or None,
            }
        )
    return rows


def gateway_table(rows: list[dict[str, Any]], ttft: dict[str, Any] | None) -> str:
    lines = [
        "| passthrough case | direct req/s | chatkeep req/s | ratio | p50 direct → chatkeep "
        "(ms) | added p50 (ms) | p99 direct → chatkeep (ms) | added p99 (ms) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['case']} | {_fmt(row['direct_rps'], 0)} | {_fmt(row['chatkeep_rps'], 0)} "
            f"| {_fmt(row['throughput_ratio'])} "
            f"| {_fmt(row['direct_p50_ms'])} → {_fmt(row['chatkeep_p50_ms'])} "
            f"| {_fmt(row['added_p50_ms'])} "
            f"| {_fmt(row['direct_p99_ms'])} → {_fmt(row['chatkeep_p99_ms'])} "
            f"| {_fmt(row['added_p99_ms'])} |"
        )
    if ttft is not None:
        direct = ttft["direct"].get("ttft_ms") or {}
        through = ttft["chatkeep"].get("ttft_ms") or {}
        lines += [
            "",
            "| time to first token, streamed, c=1 | direct (ms) | chatkeep (ms) | added (ms) |",
            "|---|---:|---:|---:|",
        ]
        for name in ("p50", "p99"):
            lines.append(
                f"| {name} | {_fmt(direct.get(name))} | {_fmt(through.get(name))} "
                f"| {_fmt(_minus(through.get(name), direct.get(name)))} |"
            )
        first = (ttft.get("durable") or {}).get("ttft_ms")
        if first:
            lines.append(
                f"| p50 / p99, durable send streamed (first `delta`) | | "
                f"{_fmt(first['p50'])} / {_fmt(first['p99'])} | |"
            )
    broken = [row for row in rows if row["problem"]]
    for row in broken:
        lines.append(f"\nnot measured, {row['case']}: {row['problem']}")
    return "\n".join(lines)


def durable_rows(
    durable: list[dict[str, Any]], gateway: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """One row per durable case, next to the passthrough of the same shape."""
    by_shape = {(c["stream"], c["concurrency"]): c for c in gateway}
    rows = []
    for case in durable:
        result = case.get("result", {})
        shape = by_shape.get((case["stream"], case["concurrency"]), {})
        passthrough = shape.get("chatkeep", {}).get("throughput_rps")
        direct = shape.get("direct", {}).get("throughput_rps")
        rps = result.get("throughput_rps")
        rows.append(
            {
                "case": (
                    f"{case['model']}, {'streamed' if case['stream'] else 'JSON'}, "
                    f"c={case['concurrency']}"
                ),
                "model": case["model"],
                "stream": case["stream"],
                "concurrency": case["concurrency"],
                "sends_per_second": rps,
                "messages_committed_per_second": None if rps is None else 2 * rps,
                "p50_ms": _stat(result, "p50"),
                "p99_ms": _stat(result, "p99"),
                "vs_passthrough": _over(rps, passthrough),
                "vs_direct": _over(rps, direct),
                "errors": result.get("errors", 0),
                "problem": case.get("problem"),
            }
        )
    return rows


def durable_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| durable send (SQLite, synchronous=FULL) | sends/s | messages committed/s "
        "| p50 (ms) | p99 (ms) | / passthrough via chatkeep | / direct backend |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        if row["problem"]:
            lines.append(f"| {row['case']} | not measured: {row['problem'][:80]} | | | | | |")
            continue
        lines.append(
            f"| {row['case']} | {_fmt(row['sends_per_second'], 0)} "
            f"| {_fmt(row['messages_committed_per_second'], 0)} "
            f"| {_fmt(row['p50_ms'])} | {_fmt(row['p99_ms'])} "
            f"| {_fmt(row['vs_passthrough'])} | {_fmt(row['vs_direct'])} |"
        )
    return "\n".join(lines)


def memory_table(idle: dict[str, Any], runs: list[dict[str, Any]]) -> str:
    lines = [
        "| resident memory of chatkeep | RSS (MiB) | notes |",
        "|---|---:|---|",
        f"| just started | {_fmt(idle['startup_rss'] / MIB, 1)} | |",
        f"| idle, after a few requests of each kind | {_fmt(idle['idle_rss'] / MIB, 1)} "
        f"| USS {_fmt((idle.get('idle_uss') or 0) / MIB, 1)} MiB |",
    ]
    for run in runs:
        slope = run["slope_bytes_per_request"]
        lines.append(
            f"| after {run['requests']:,} {run['kind']} requests (c={run['concurrency']}) "
            f"| {_fmt(run['end_rss'] / MIB, 1)} | start {_fmt(run['start_rss'] / MIB, 1)}, "
            f"peak {_fmt(run['peak_rss'] / MIB, 1)}, slope {_fmt(slope, 1)} bytes/request, "
            f"verdict {run['verdict']}, {_fmt(run['throughput_rps'], 0)} req/s |"
        )
    return "\n".join(lines)


def targets(
    gateway: list[dict[str, Any]],
    durable: list[dict[str, Any]],
    idle: dict[str, Any],
    memory_runs: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """Each target with the measured value and whether it is met."""
    found: list[dict[str, Any]] = []
    for row in gateway:
        kind = "streamed" if row["stream"] else "JSON"
        if row["concurrency"] == 32:
            ratio = row["throughput_ratio"]
            found.append(
                {
                    "target": f"passthrough {kind} keeps >= 25% of direct throughput at c=32",
                    "measured": "not measured" if ratio is None else round(ratio, 3),
                    "met": ratio is not None and ratio >= TARGET_THROUGHPUT_RATIO,
                }
            )
        if row["concurrency"] == 1:
            added = row["added_p50_ms"]
            found.append(
                {
                    "target": f"passthrough {kind} adds < 1 ms at the median at c=1",
                    "measured": "not measured" if added is None else round(added, 3),
                    "met": added is not None and added < TARGET_ADDED_P50_MS,
                }
            )
    for row in durable:
        if row["concurrency"] == 32 and row["model"] == "fake":
            kind = "streamed" if row["stream"] else "JSON"
            rps = row["sends_per_second"]
            found.append(
                {
                    "target": f"durable {kind} sends >= 1000/s at c=32 (synchronous=FULL)",
                    "measured": "not measured" if rps is None else round(rps, 1),
                    "met": rps is not None and rps >= TARGET_DURABLE_RPS,
                }
            )
    found.append(
        {
            "target": "idle RSS < 60 MiB",
            "measured": round(idle["idle_rss"] / MIB, 1),
            "met": idle["idle_rss"] < TARGET_IDLE_RSS,
        }
    )
    for run in memory_runs:
        slope = run["slope_bytes_per_request"]
        found.append(
            {
                "target": f"slope < 100 bytes/request over {run['requests']:,} {run['kind']} "
                "requests",
                "measured": None if slope is None else round(slope, 1),
                "met": slope is not None and slope < TARGET_SLOPE,
            }
        )
    return found


def targets_table(found: list[dict[str, Any]]) -> str:
    lines = ["| target | measured | |", "|---|---:|---|"]
    for item in found:
        lines.append(
            f"| {item['target']} | {item['measured']} | {'met' if item['met'] else 'MISSED'} |"
        )
    return "\n".join(lines)
