"""``chatkeep fake-llm``: run the fake backend until interrupted.

`register` adds the command to a Typer app; ``python -m chatkeep.fakellm`` runs it alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable
from typing import Any

import typer

from chatkeep.fakellm.config import FakeLLMConfig
from chatkeep.fakellm.serving import FakeLLMServer, start_fake_llm
from chatkeep.settings import parse_size


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is missing on Windows only
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


async def serve_fake_llm(
    config: FakeLLMConfig,
    host: str,
    port: int,
    on_ready: Callable[[FakeLLMServer], Any] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve until ``stop`` is set, or without one until SIGINT or SIGTERM.

    ``on_ready`` is called once requests are accepted; it learns the bound port.
    """
    loop = asyncio.get_running_loop()
    signals: list[signal.Signals] = []
    if stop is None:
        stop = asyncio.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):  # no signal handlers on Windows
                loop.add_signal_handler(signum, stop.set)
                signals.append(signum)
    try:
        async with await start_fake_llm(config, host, port) as server:
            if on_ready is not None:
                on_ready(server)
            await stop.wait()
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)


def fake_llm(
    port: int = typer.Option(11435, "--port", "-p", help="Port to bind; 0 picks a free one."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind."),
    tokens: int = typer.Option(16, "--tokens", "-n", help="Tokens (words) in every reply."),
    delay_ms: float = typer.Option(
        0.0, "--delay-ms", help="Pause before each streamed token; non-streamed: tokens x this."
    ),
    fail_rate: float = typer.Option(0.0, "--fail-rate", help="Fraction of requests answered 500."),
    status_429_rate: float = typer.Option(
        0.0, "--status-429-rate", help="Fraction of requests answered 429."
    ),
    first_token_ms: float = typer.Option(
        0.0, "--first-token-ms", help="Extra wait before the first token (after the headers)."
    ),
    slow_rate: float = typer.Option(
        0.0,
        "--slow-rate",
        help="Fraction of requests whose first token waits --slow-first-token-ms instead "
        "(a seeded draw of its own: it never shifts the faults).",
    ),
    slow_first_token_ms: float = typer.Option(
        0.0, "--slow-first-token-ms", help="The first-token wait of slow requests."
    ),
    timeout_rate: float = typer.Option(
        0.0, "--timeout-rate", help="Fraction of requests that hang until the client gives up."
    ),
    status_503_rate: float = typer.Option(
        0.0, "--status-503-rate", help="Fraction of requests answered 503."
    ),
    retry_after_seconds: float = typer.Option(
        1.0,
        "--retry-after-seconds",
        help="Retry-After of 429 and 503 answers (rounded up; exact in Retry-After-Ms).",
    ),
    no_retry_after: bool = typer.Option(
        False, "--no-retry-after", help="429 and 503 answers carry no Retry-After."
    ),
    down: bool = typer.Option(
        False, "--down", help="Start down: everything but /_fake/* answers 503."
    ),
    hang_seconds: float = typer.Option(
        30.0, "--hang-seconds", help="Longest hang before answering 504."
    ),
    cut_after: int | None = typer.Option(
        None, "--cut-after", help="Streams drop the connection after this many tokens."
    ),
    echo: bool = typer.Option(
        False, "--echo", help="Reply with the words of the last user message."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the fault and slowness draws."),
    max_body: str = typer.Option("1MiB", "--max-body", help="Request bodies over this get 413."),
    model: list[str] = typer.Option(
        ["fake"], "--model", help="Model names to list (any name is accepted)."
    ),
) -> None:
    """Run a fast, scriptable fake model backend (Ollama and OpenAI wire formats).

    Fault rates add up to at most 1 and are drawn per request from --seed.

    A running backend changes with POST /_fake/config and a JSON object of fields
    named as the options with underscores, e.g. {"fail_rate": 1.0}, {"down": true}
    or {"status_429_rate": 1.0, "retry_after_seconds": 2}.

    GET /_fake/config reads the script; GET /_fake/stats reads the counters
    (requests, in_flight, streams_completed, streams_disconnected, faults...);
    POST /_fake/stats/reset reads and zeroes them.
    """
    try:
        config = FakeLLMConfig(
            tokens=tokens,
            delay_ms=delay_ms,
            first_token_ms=first_token_ms,
            slow_rate=slow_rate,
            slow_first_token_ms=slow_first_token_ms,
            fail_rate=fail_rate,
            status_429_rate=status_429_rate,
            timeout_rate=timeout_rate,
            status_503_rate=status_503_rate,
            retry_after_seconds=None if no_retry_after else retry_after_seconds,
            down=down,
            hang_seconds=hang_seconds,
            cut_after=cut_after,
            echo=echo,
            seed=seed,
            max_body_bytes=parse_size(max_body),
            models=tuple(model),
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None

    def announce(server: FakeLLMServer) -> None:
        # One parseable line: scripts started with --port 0 read the URL from it.
        typer.echo(f"fake-llm listening on {server.url}")

    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(serve_fake_llm(config, host, port, announce))


def register(app: typer.Typer) -> None:
    """Add the ``fake-llm`` command to ``app``."""
    app.command("fake-llm")(fake_llm)
