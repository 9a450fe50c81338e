"""Tail cut: p99 time to first token of a two-backend pool, with and without hedging.

Two fake backends (separate processes, separately seeded) answer their first token after
``first_token_ms``, except a seeded ``slow_rate`` share that waits ``slow_first_token_ms``.
One chatkeep serves six models over the same two backends: two paths, three hedging
settings each, every one its own pool (own health, own hedge budget):

* ``passthrough`` — OpenAI-wire backends, so ``/v1`` relays the answer byte for byte;
* ``translated`` — Ollama-wire backends, so ``/v1`` reads the pool's token stream (the
  path the durable send and summaries take too);

and ``off`` (no hedging), ``fixed`` (``hedge_after_ms``) and ``adaptive`` (the primary's
observed p90, doubled). Rounds are interleaved; the percentiles are over every round's replies
together (a p99 of 2 000 replies rests on 20 of them, so one round's is jumpy). The extra
requests are what reached the backends (their ``chat_requests``) beyond the client's.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

import pool_control
import processes
from pool_client import Outcome, StreamRun, run_streams, summary_ms

PATHS = {"passthrough": "openai", "translated": "ollama"}
HEDGING = ("off", "fixed", "adaptive")


def _hedge_setting(variant: str, after_ms: float) -> dict[str, Any]:
    if variant == "fixed":
        return {"hedge_after_ms": after_ms}
    if variant == "adaptive":
        return {"hedge_after_ms": "adaptive"}
    return {}


def _say(text: str) -> None:
    print(text, flush=True)


def run_tail(work_dir: Path, options: argparse.Namespace) -> dict[str, Any]:
    """Start the backends and chatkeep, measure every model, stop them; the raw numbers."""
    flags = [
        "--tokens",
        "16",
        "--first-token-ms",
        str(options.first_token_ms),
        "--slow-rate",
        str(options.slow_rate),
        "--slow-first-token-ms",
        str(options.slow_first_token_ms),
    ]
    fakes = []
    try:
        for number in (1, 2):
            fakes.append(
                processes.start_fake_llm_with(
                    work_dir, [*flags, "--seed", str(number)], name=f"tail-fake-{number}"
                )
            )
        urls = [fake.url for fake in fakes]
        models = {
            f"{path}-{variant}": pool_control.pool_model(
                urls, provider=wire, **_hedge_setting(variant, options.hedge_after_ms)
            )
            for path, wire in PATHS.items()
            for variant in HEDGING
        }
        settings = pool_control.chatkeep_settings(models, default="passthrough-off")
        chatkeep = processes.start_chatkeep(
            work_dir, urls[0], work_dir / "tail-data", label="tail", settings=settings
        )
        try:
            return _measure(chatkeep.url, urls, list(models), options)
        finally:
            chatkeep.stop()
    finally:
        for fake in fakes:
            fake.stop()


def _measure(
    chatkeep_url: str, urls: list[str], models: list[str], options: argparse.Namespace
) -> dict[str, Any]:
    concurrency = options.tail_concurrency
    for model in models:
        # Connections open, health windows full, adaptive delays learned.
        asyncio.run(
            run_streams(chatkeep_url, model, concurrency=concurrency, requests=options.tail_warmup)
        )
    # The pool's counters from here on: the warm-up's hedges are not the run's.
    before = {entry["model"]: entry for entry in pool_control.admin_providers(chatkeep_url)}
    runs: dict[str, list[StreamRun]] = {model: [] for model in models}
    reached: dict[str, list[dict[str, int]]] = {model: [] for model in models}
    for round_number in range(options.rounds):
        for model in models:
            pool_control.reset_fake_stats(urls)
            run = asyncio.run(
                run_streams(
                    chatkeep_url, model, concurrency=concurrency, requests=options.tail_requests
                )
            )
            stats = [pool_control.fake_stats(url) for url in urls]
            runs[model].append(run)
            reached[model].append(
                {
                    "chat_requests": sum(s["chat_requests"] for s in stats),
                    "slow": sum(s["slow"] for s in stats),
                    "streams_disconnected": sum(s["streams_disconnected"] for s in stats),
                }
            )
            ttft = run.ttft_ms()
            _say(
                f"  tail round {round_number + 1} {model:20} TTFT p50 {ttft['p50']} ms "
                f"p99 {ttft['p99']} ms, {len(run.outcomes) - run.successes} failed"
            )
    admin = {entry["model"]: entry for entry in pool_control.admin_providers(chatkeep_url)}
    cases = []
    for model in models:
        path, variant = model.split("-", 1)
        outcomes: list[Outcome] = [o for run in runs[model] for o in run.outcomes]
        ok = [o.ttft for o in outcomes if o.ok and o.ttft is not None]
        backends = {key: sum(r[key] for r in reached[model]) for key in reached[model][0]}
        client = len(outcomes)
        cases.append(
            {
                "model": model,
                "path": path,
                "hedging": variant,
                "client_requests": client,
                "successes": sum(1 for o in outcomes if o.ok),
                "ttft_ms": summary_ms(ok),
                "round_ttft_p99_ms": [run.ttft_ms()["p99"] for run in runs[model]],
                "backends": backends,
                "extra_requests": round((backends["chat_requests"] - client) / client, 5),
                "pool": {
                    "hedging": _counted(before[model].get("hedging"), admin[model].get("hedging")),
                    "retries": admin[model]["retries"] - before[model]["retries"],
                    "p95_ttft_ms": [b["p95_ttft_ms"] for b in admin[model]["backends"]],
                },
            }
        )
    return {
        "backend": {
            "first_token_ms": options.first_token_ms,
            "slow_rate": options.slow_rate,
            "slow_first_token_ms": options.slow_first_token_ms,
            "tokens": 16,
        },
        "hedge_after_ms": options.hedge_after_ms,
        "concurrency": concurrency,
        "requests_per_round": options.tail_requests,
        "warmup_requests": options.tail_warmup,
        "rounds": options.rounds,
        "cases": cases,
    }


def _counted(before: dict[str, Any] | None, after: dict[str, Any] | None) -> dict[str, Any] | None:
    """A pool's hedging counters over the measured rounds only."""
    if before is None or after is None:
        return None
    return {
        **after,
        "sent": after["sent"] - before["sent"],
        "refused": after["refused"] - before["refused"],
    }


def tail_table(data: dict[str, Any]) -> str:
    """The markdown table of the tail cut."""
    lines = [
        "| path | hedging | replies | TTFT p50 | TTFT p99 | p99 / off | extra requests "
        "| hedges sent / refused | losers closed |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    off = {c["path"]: c["ttft_ms"]["p99"] for c in data["cases"] if c["hedging"] == "off"}
    for case in data["cases"]:
        ttft = case["ttft_ms"]
        ratio = ttft["p99"] / off[case["path"]] if off.get(case["path"]) else None
        hedging = (case["pool"].get("hedging") or {}) if case["hedging"] != "off" else {}
        sent = f"{hedging['sent']} / {hedging['refused']}" if hedging else "-"
        label = case["hedging"]
        if label == "fixed":
            label = f"after {data['hedge_after_ms']:g} ms"
        elif label == "adaptive":
            label = "adaptive (2x p90)"
        lines.append(
            f"| {case['path']} | {label} | {case['client_requests']} | {ttft['p50']:.1f} ms "
            f"| {ttft['p99']:.1f} ms | {'-' if ratio is None else f'{ratio:.2f}'} "
            f"| {case['extra_requests'] * 100:.2f}% | {sent} "
            f"| {case['backends']['streams_disconnected']} |"
        )
    return "\n".join(lines)
