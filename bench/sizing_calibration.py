"""What the bounded structures report against what they really hold, per round of a workload.

The leak verdict is taken on RSS less the bytes the registered structures report, so a
structure that reports more than it holds makes that residual shrink as it fills, and one
that reports less makes it grow. This measures both sides on a real server built in process
(SQLite storage, the ``echo`` model, the whole middleware stack):

1. warm up with ``--warmup`` rounds, empty the structures, then start ``tracemalloc``;
2. run ``--rounds`` rounds of the workload: create a conversation, send it ``--exchanges``
   messages of ``--chars`` characters (each a JSON reply from ``echo``);
3. note what every registered structure reports, then empty the structures one at a time
   (``reclaim(1.0)``, the governor's own call) and measure what the heap gave back.

"Measured" is what emptying the structure freed, as the allocator really holds it: each
block ``tracemalloc`` saw freed, rounded up the way pymalloc stores it (16-byte size
classes up to 512 bytes; above that, glibc malloc's 8-byte header and 16-byte alignment).
Structures are emptied before tracing starts, so everything they hold afterwards was
traced. Figures are per round of the workload (reply streams keep only the last few hundred
replies, so theirs are spread over all rounds; the ratio is what counts). SQLite's heap is
left out: it lives outside Python's heap, and what it reports is SQLite's own exact counter.
Reply streams are emptied first: a finished stream shares its text with the
committed message the working set holds, so that text is measured with the working set.

    .venv/bin/python bench/sizing_calibration.py
    .venv/bin/python bench/sizing_calibration.py --chars 20 250 2000 --exchanges 1 8
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import tempfile
import tracemalloc
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx

from chatkeep.app import create_app
from chatkeep.memory.governor import Reclaimable
from chatkeep.memory.watch import build_memory_watch
from chatkeep.settings import Settings
from leak_workload import message_text

#: pymalloc serves blocks up to this size from 16-byte size classes; larger go to malloc.
SMALL_REQUEST_THRESHOLD = 512
ALIGNMENT = 16
#: glibc malloc's per-chunk header.
MALLOC_HEADER = 8


def allocated(size: int) -> int:
    """Bytes a block of ``size`` requested bytes really occupies."""
    if size <= SMALL_REQUEST_THRESHOLD:
        return -(-size // ALIGNMENT) * ALIGNMENT
    return -(-(size + MALLOC_HEADER) // ALIGNMENT) * ALIGNMENT


def heap_bytes() -> int:
    """Traced heap as the allocator holds it (requested sizes rounded up)."""
    gc.collect()
    snapshot = tracemalloc.take_snapshot()
    return sum(allocated(trace.size) for trace in snapshot.traces)


def text_of_length(index: int, chars: int) -> str:
    """A message of about ``chars`` characters that differs per index."""
    base = message_text(index)
    return (base * (chars // len(base) + 1))[:chars]


async def one_round(client: httpx.AsyncClient, index: int, chars: int, exchanges: int) -> None:
    """Create a conversation and send it ``exchanges`` messages."""
    created = (await client.post("/api/conversations", json={})).json()
    for turn in range(exchanges):
        response = await client.post(
            f"/api/conversations/{created['id']}/messages",
            json={"content": text_of_length(index * 100 + turn, chars)},
        )
        response.raise_for_status()


async def measure(chars: int, exchanges: int, rounds: int, warmup: int) -> list[dict[str, Any]]:
    """One configuration: reported and measured bytes per structure."""
    with tempfile.TemporaryDirectory(prefix="chatkeep-sizing-") as tmp:
        settings = Settings(data_dir=Path(tmp) / "data", log_level="WARNING")
        watch = build_memory_watch(settings.memory)
        app = create_app(settings, memory=watch)
        lifespan = app.router.lifespan_context(app)
        await lifespan.__aenter__()
        try:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://sizing") as client:
                for index in range(warmup):
                    await one_round(client, index, chars, exchanges)
                structures = watch.governor.registered
                # Emptied before tracing starts, so that all they hold later was traced.
                for structure in structures.values():
                    structure.reclaim(1.0)
                tracemalloc.start()
                try:
                    for index in range(warmup, warmup + rounds):
                        await one_round(client, index, chars, exchanges)
                    rows = release_in_turn(structures, _release_order(structures))
                finally:
                    tracemalloc.stop()
        finally:
            await lifespan.__aexit__(None, None, None)
    for row in rows:
        row.update(chars=chars, exchanges=exchanges, rounds=rounds)
    return rows


#: Structures whose bytes live outside Python's heap, where tracemalloc cannot see them;
#: what they report is the library's own exact counter.
NOT_TRACED = {"sqlite"}


def _release_order(structures: dict[str, Reclaimable]) -> list[str]:
    # Streams first: the text they share with committed messages belongs to the working set.
    names = [name for name in structures if name not in NOT_TRACED]
    return sorted(names, key=lambda name: (name != "reply_streams", name))


def release_in_turn(
    structures: dict[str, Reclaimable], order: Iterable[str]
) -> list[dict[str, Any]]:
    """Empty each structure in turn; what it reported, and what emptying it freed."""
    reported = {name: s.nbytes() for name, s in structures.items()}
    rows = []
    heap = heap_bytes()
    for name in order:
        structures[name].reclaim(1.0)
        after = heap_bytes()
        freed = heap - after
        heap = after
        rows.append(
            {
                "structure": name,
                "reported": reported[name],
                "measured": freed,
                "ratio": round(reported[name] / freed, 2) if freed > 0 else None,
            }
        )
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chars", type=int, nargs="+", default=[20, 250, 2000])
    parser.add_argument("--exchanges", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--rounds", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=300)
    return parser.parse_args(argv)


async def main(args: argparse.Namespace) -> None:
    """Every configuration in turn, one table row per structure."""
    print(
        f"{'chars':>6} {'exch':>4} {'structure':<14} {'reported/round':>14} "
        f"{'measured/round':>14} {'ratio':>6}"
    )
    for chars in args.chars:
        for exchanges in args.exchanges:
            for row in await measure(chars, exchanges, args.rounds, args.warmup):
                print(
                    f"{chars:>6} {exchanges:>4} {row['structure']:<14} "
                    f"{row['reported'] / args.rounds:>14.0f} "
                    f"{row['measured'] / args.rounds:>14.0f} {row['ratio']!s:>6}",
                    flush=True,
                )


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
