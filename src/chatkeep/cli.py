"""The ``chatkeep`` command line: serve, check, keys, export, import, fake-llm, soak."""

from __future__ import annotations

import gc
import logging
import os
import socket
import sys
from pathlib import Path
from typing import Annotated

import typer
import uvicorn
from pydantic import ValidationError
from pydantic_settings import SettingsError

from chatkeep.api.admin import is_loopback
from chatkeep.errors import ChatkeepError, StorageError
from chatkeep.logs import configure_logging
from chatkeep.settings import Settings, load_settings, unknown_variables

#: The shortest admin token `serve` accepts on a network address.
MIN_NETWORK_TOKEN_CHARS = 16

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
    from chatkeep.app import begin_shutdown, create_app
    from chatkeep.serving import GracefulServer, bounded_head_protocol

    overrides: dict[str, object] = {}
    if host is not None:
        overrides["host"] = host
    if port is not None:
        overrides["port"] = port
    settings = _load_or_exit(config, overrides)
    if settings.access.mode == "none" and not is_loopback(settings.host):
        typer.echo(
            f"refusing to listen on {settings.host}: with CHATKEEP_AUTH=none every client "
            "would act as the one owner and see every conversation. Set CHATKEEP_AUTH=keys "
            "(see `chatkeep keys create`), or bind a loopback address.",
            err=True,
        )
        raise typer.Exit(code=2)
    if not settings.admin_token and not is_loopback(settings.host):
        typer.echo(
            f"refusing to listen on {settings.host}: /admin would be open to the network. "
            "Set CHATKEEP_ADMIN_TOKEN, or bind a loopback address.",
            err=True,
        )
        raise typer.Exit(code=2)
    if (
        settings.admin_token
        and len(settings.admin_token) < MIN_NETWORK_TOKEN_CHARS
        and not is_loopback(settings.host)
    ):
        typer.echo(
            f"refusing to listen on {settings.host}: CHATKEEP_ADMIN_TOKEN is shorter than "
            f"{MIN_NETWORK_TOKEN_CHARS} characters, which a network can guess. Make one with "
            "python3 -c 'import secrets; print(secrets.token_hex(32))'.",
            err=True,
        )
        raise typer.Exit(code=2)
    configure_logging(settings.logging)
    for name in unknown_variables(os.environ):
        logging.getLogger("chatkeep").warning("%s names no setting; it is ignored", name)
    # Refuse a data directory in use, and a busy port, before the app starts: its startup
    # runs crash recovery, which must never run on another instance's live database.
    # (The store takes the lock itself when it opens; this only fails early and plainly.)
    if settings.storage == "sqlite":
        from chatkeep.storage.sqlite.lock import probe

        try:
            probe(settings.data_dir)
        except StorageError as exc:  # DataDirLocked, or a directory it cannot use
            typer.echo(f"chatkeep: {exc.message}", err=True)
            raise typer.Exit(code=1) from None
    try:
        listener = _bind(settings.host, settings.port)
    except OSError as exc:
        typer.echo(
            f"chatkeep: cannot listen on {settings.host}:{settings.port}: {exc.strerror}",
            err=True,
        )
        raise typer.Exit(code=1) from None
    try:
        application = create_app(settings)
    except (ChatkeepError, ValueError) as exc:  # a model the registry cannot build
        listener.close()
        typer.echo(f"chatkeep: cannot start: {exc}", err=True)
        raise typer.Exit(code=2) from None
    _tune_garbage_collector(settings.gc_threshold)
    logging.getLogger("chatkeep").info(
        "listening on %s:%d storage=%s data_dir=%s models=%s",
        settings.host,
        listener.getsockname()[1],
        settings.storage,
        settings.data_dir.resolve(),
        ",".join(sorted(settings.models)),
    )
    server = GracefulServer(
        uvicorn.Config(
            application,
            host=settings.host,
            port=settings.port,
            loop="uvloop",
            http=bounded_head_protocol(settings.limits.max_header_bytes),
            # Our handler formats, truncates and rate-limits every record, uvicorn's included.
            log_config=None,
            log_level=None,
            access_log=False,
            # chatkeep trusts no forwarding header (see `api/admin.py`); uvicorn's rewrite of
            # the client address from X-Forwarded-For would only cost a layer per request.
            proxy_headers=False,
            timeout_graceful_shutdown=int(settings.shutdown_grace_seconds) + 5,
        ),
        on_stop=lambda: begin_shutdown(application),
    )
    with listener:
        server.run(sockets=[listener])
    if not server.started:  # the app's startup failed (e.g. a damaged database); it logged why
        raise typer.Exit(code=1)


def _load_or_exit(config: Path | None, overrides: dict[str, object]) -> Settings:
    """The settings, or one line per problem and exit 2 (never a traceback, never a value).

    Values stay out of the message: a misplaced field may hold an API key.
    """
    try:
        return load_settings(config, **overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, error['loc'])) or 'settings'}: {error['msg']}"
            for error in exc.errors(include_url=False, include_input=False)
        )
        typer.echo(f"chatkeep: invalid settings: {problems}", err=True)
    except SettingsError as exc:
        typer.echo(f"chatkeep: invalid settings: {exc}", err=True)
    raise typer.Exit(code=2)


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``, bound before anything touches storage."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        # As uvicorn does: a restart may rebind while old connections sit in TIME_WAIT.
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(2048)
        listener.set_inheritable(True)
    except BaseException:
        listener.close()
        raise
    return listener


@app.command()
def check(
    data_dir: Annotated[
        Path,
        typer.Option("--data-dir", envvar="CHATKEEP_DATA_DIR", help="The data directory to check."),
    ] = Path("data"),
) -> None:
    """Run SQLite's full integrity check on the database (safe while a server runs)."""
    from chatkeep.storage.sqlite import DATABASE_FILE
    from chatkeep.storage.sqlite.integrity import check_file

    path = data_dir / DATABASE_FILE
    if not path.is_file():
        typer.echo(f"no database at {path}", err=True)
        raise typer.Exit(code=2)
    findings = check_file(path)
    if not findings:
        typer.echo(f"{path}: ok")
        return
    typer.echo(f"{path}: damaged", err=True)
    for finding in findings:
        typer.echo(f"  {finding}", err=True)
    typer.echo(
        "Restore the file from a backup; the sqlite3 shell's `.recover` command copies out "
        "what can still be read.",
        err=True,
    )
    raise typer.Exit(code=1)


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
    """Add the ``keys``, ``export``, ``import``, ``fake-llm`` and ``soak`` commands."""
    from chatkeep.cli_keys import keys_app
    from chatkeep.cli_transfer import register as register_transfer
    from chatkeep.fakellm.cli import register as register_fake_llm
    from chatkeep.soak.cli import register as register_soak

    cli.add_typer(keys_app, name="keys")
    register_transfer(cli)
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
