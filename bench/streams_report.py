"""The streams part's table and targets: ratios against the direct backend in the same run."""

from __future__ import annotations

from typing import Any

MIB = 1024 * 1024


#: Targets of 1 000 streams at once, against the direct backend in the same run.
TARGET_TTFT_RATIO = 2.0
TARGET_GAP_RATIO = 2.0
TARGET_PEAK_RSS = 150 * MIB


def _over(value: float | None, direct: float | None) -> float | None:
    return None if value is None or not direct else value / direct


def _cell(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _by_count(found: dict[str, Any]) -> dict[int, dict[str, dict[str, Any]]]:
    runs: dict[int, dict[str, dict[str, Any]]] = {}
    for run in found["runs"]:
        runs.setdefault(run["streams"], {})[run["target"]] = run
    return runs


def sustained(found: dict[str, Any]) -> dict[str, int | None]:
    """Per target, the largest number of streams tried with nothing lost, late or failed."""
    best: dict[str, int | None] = {}
    for count, targets in sorted(_by_count(found).items()):
        for name, run in targets.items():
            best.setdefault(name, None)
            if run["sustained"]:
                best[name] = count
    return best


def table(found: dict[str, Any]) -> str:
    """One row per number of streams and target, ratios against the direct backend."""
    lines = [
        "| streams | path | tokens delivered | late gaps | failed | TTFT p50 (ms) | / direct "
        "| longest gap p99 (ms) | / direct | chatkeep peak RSS, both runs (MiB) | sustained |",
        "|---:|---|---:|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for count, targets in sorted(_by_count(found).items()):
        direct = targets.get("direct", {})
        for name in ("direct", "passthrough", "durable"):
            run = targets.get(name)
            if run is None:
                continue
            ttft, gap = run["ttft_ms"]["p50"], run["longest_gap_ms"]["p99"]
            failed = ", ".join(f"{k} {v}" for k, v in run["failed"].items()) or "none"
            peak = run["rss_peak"]
            lines.append(
                f"| {count:,} | {name} | {run['tokens_delivered']:,} / {run['tokens_expected']:,} "
                f"| {run['late_gaps']:,} | {failed} | {_cell(ttft)} "
                f"| {_cell(_over(ttft, direct.get('ttft_ms', {}).get('p50')))} | {_cell(gap)} "
                f"| {_cell(_over(gap, direct.get('longest_gap_ms', {}).get('p99')))} "
                f"| {'' if peak is None else _cell(peak / MIB, 1)} "
                f"| {'yes' if run['sustained'] else 'no'} |"
            )
    best = sustained(found)
    lines += [
        "",
        f"Replies of {found['tokens']} tokens, {found['delay_ms']:g} ms apart at the backend; "
        f"a gap is late over {2 * found['delay_ms']:g} ms. Streams sustained (most tried with "
        "nothing lost, late or failed): "
        + ", ".join(f"{name} {'none' if n is None else f'{n:,}'}" for name, n in best.items())
        + ".",
    ]
    return "\n".join(lines)


def targets(found: dict[str, Any]) -> list[dict[str, Any]]:
    """The targets of the largest number of streams tried, in `report.targets_table` form."""
    runs = _by_count(found)
    if not runs:
        return []
    count = max(runs)
    direct = runs[count].get("direct", {})
    items: list[dict[str, Any]] = []
    for name in ("passthrough", "durable"):
        run = runs[count].get(name)
        if run is None:
            continue
        ttft = _over(run["ttft_ms"]["p50"], direct.get("ttft_ms", {}).get("p50"))
        gap = _over(run["longest_gap_ms"]["p99"], direct.get("longest_gap_ms", {}).get("p99"))
        peak = run["rss_peak"]
        items += [
            {
                "target": f"{count:,} streams, {name}: every token delivered",
                "measured": f"{run['tokens_delivered']:,} / {run['tokens_expected']:,}",
                "met": run["tokens_delivered"] == run["tokens_expected"] and not run["failed"],
            },
            {
                "target": f"{count:,} streams, {name}: TTFT p50 <= 2x direct",
                "measured": "n/a" if ttft is None else f"{ttft:.2f}x",
                "met": ttft is not None and ttft <= TARGET_TTFT_RATIO,
            },
            {
                "target": f"{count:,} streams, {name}: longest gap p99 <= 2x direct",
                "measured": "n/a" if gap is None else f"{gap:.2f}x",
                "met": gap is not None and gap <= TARGET_GAP_RATIO,
            },
            {
                "target": f"{count:,} streams, {name}: chatkeep peak RSS <= 150 MiB",
                "measured": "n/a" if peak is None else f"{peak / MIB:.1f} MiB",
                "met": peak is not None and peak <= TARGET_PEAK_RSS,
            },
        ]
    return items
