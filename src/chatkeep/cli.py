"""The ``chatkeep`` command line: serve, fake-llm, soak."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
import uvicorn

from chatkeep.api.admin import is_loopback
from chatkeep.fakellm.cli import register as register_fake_llm
from chatkeep.logs import configure_logging
from chatkeep.settings import load_settings
from chatkeep.soak.cli import register as register_soak

app = typer.Typer(
    help="chatkeep: durable conversations for LLM applications, in bounded memory.",
    no_args_is_help=True,
    add_completion=False,
)


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


register_fake_llm(app)
register_soak(app)


def main() -> None:
    """Entry point of the ``chatkeep`` console script."""
    app()
