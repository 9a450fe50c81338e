"""The ``chatkeep`` command line: serve, fake-llm, soak."""

from __future__ import annotations

import gc
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
import uvicorn

from chatkeep.api.admin import is_loopback
from chatkeep.logs import configure_logging
from chatkeep.settings import load_settings

app = typer.Typer(
    help="chatkeep: durable conversations for LLM applications, in bounded memory.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def chatkeep() -> None:
    """Durable conversations for LLM applications, in bounded memory."""
    # A callback keeps `serve` a subcommand even when it is the only one registered.


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind [default: 127.0.0.1].")] = None,
    port: Annotated[
        int | None, typer.Option(help="Port to bind (0: any free) [default: 8350].")
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="TOML settings file.", exists=True)
    ] = None,
) -> None:
    """Serve the HTTP API."""
    from chatkeep.app import create_app

    overrides: dict[str, object] = {}
    if host is not None:
        overrides["host"] = host
    if port is not None:
        overrides["port"] = port
    settings = load_settings(config, **overrides)
    if not settings.admin_token and not is_loopback(settings.host):
        typer.echo(
            f"refusing to listen on {settings.host}: /admin would be open to the network. "
            "Set CHATKEEP_ADMIN_TOKEN, or bind a loopback address.",
            err=True,
        )
        raise typer.Exit(code=2)
    configure_logging(settings)
    application = create_app(settings)
    _tune_garbage_collector(settings.gc_threshold)
    logging.getLogger("chatkeep").info(
        "storage=%s data_dir=%s models=%s",
        settings.storage,
        settings.data_dir.resolve(),
        ",".join(sorted(settings.models)),
    )
    uvicorn.run(
        application,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        # Our handler formats, truncates and rate-limits every record, uvicorn's included.
        log_config=None,
        log_level=None,
        access_log=False,
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds) + 5,
    )


def _tune_garbage_collector(threshold: int) -> None:
    """Freeze what startup built and collect the young generation less often.

    Everything alive now (modules, classes, the app) lives as long as the process; frozen,
    full collections no longer walk it. Done here rather than in the app's lifespan because
    freezing is process-wide: an app embedded in another process must not do it.
    """
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(threshold, middle, old)


def register_tools(cli: typer.Typer) -> None:
    """Add the ``fake-llm`` and ``soak`` commands."""
    from chatkeep.fakellm.cli import register as register_fake_llm
    from chatkeep.soak.cli import register as register_soak

    register_fake_llm(cli)
    register_soak(cli)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``chatkeep`` console script."""
    args = sys.argv[1:] if argv is None else argv
    # A server lives for weeks: it does not import the load generator and fake backend
    # (and what they pull in) just to list them in --help.
    if args[:1] != ["serve"]:
        register_tools(app)
    app(args)
