"""``chatkeep keys``: create, list and revoke API keys from the command line.

These commands act as the admin (a key made here may have any limits) and work next to
a running server: they open the database in shared mode (`SQLiteStore(shared=True)`),
without the data directory's lock, and never run crash recovery. A key created here
works on the server at once; a revoked one, with every key made from it, stops working
within the server's ``CHATKEEP_AUTH_CACHE_SECONDS``.

Exit codes: ``0`` done, ``1`` no such key or storage unavailable, ``2`` bad options
(or settings that keep no keys: ``storage=memory``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, TypeVar

import orjson
import typer
from rich.box import SIMPLE_HEAD
from rich.console import Console
from rich.table import Table

from chatkeep.auth.key_service import KeyService, key_dict
from chatkeep.cli_store import require_database, run_on_store, tool_settings
from chatkeep.domain.keys import ApiKey, number_text
from chatkeep.settings import Settings
from chatkeep.storage.sqlite import SQLiteStore

T = TypeVar("T")

keys_app = typer.Typer(
    help="Create, list and revoke API keys (safe while a server runs on the data directory).",
    no_args_is_help=True,
)

ConfigOption = Annotated[
    Path | None, typer.Option("--config", help="TOML settings file.", exists=True)
]
DataDirOption = Annotated[
    Path | None,
    typer.Option("--data-dir", help="The data directory (default: from the settings)."),
]


@keys_app.command()
def create(
    owner: Annotated[str, typer.Option("--owner", help="The owner the key acts for.")],
    label: Annotated[str | None, typer.Option(help="A note to recognise the key by.")] = None,
    rate: Annotated[
        str | None,
        typer.Option(
            metavar="N[/s]", help="Requests a second, as 5 or 5/s (default: from the settings)."
        ),
    ] = None,
    burst: Annotated[
        int | None,
        typer.Option(help="Requests at once above the rate (default: from the settings)."),
    ] = None,
    max_streams: Annotated[
        int | None, typer.Option(help="Replies open at once (default: from the settings).")
    ] = None,
    priority: Annotated[
        int | None,
        typer.Option(help="Admission priority, 0 (first) to 9 (default: from the settings)."),
    ] = None,
    models: Annotated[
        str | None,
        typer.Option(metavar="A,B", help="Only these models, comma-separated (default: all)."),
    ] = None,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Create a key and print its secret: the only time it is shown."""
    settings = _settings(config, data_dir)
    rate_value = parse_rate(rate) if rate is not None else None
    model_names = parse_models(models) if models is not None else None
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    issued = _run(
        settings,
        lambda service: service.create(
            None,
            owner=owner,
            label=label,
            rate=rate_value,
            burst=burst,
            max_streams=max_streams,
            priority=priority,
            models=model_names,
        ),
    )
    key = issued.key
    typer.echo(f"created key {key.id} for owner {key.owner_id}")
    typer.echo(f"secret: {issued.secret}")
    typer.echo("This secret is shown only now and cannot be shown again: store it safely.")


@keys_app.command("list")
def list_keys(
    owner: Annotated[str | None, typer.Option(help="Only this owner's keys.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of a table.")] = False,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """List keys, newest first, with their limits (never their secrets)."""
    settings = _settings(config, data_dir)
    _require_database(settings)

    async def every_key(service: KeyService) -> list[ApiKey]:
        keys: list[ApiKey] = []
        cursor = None
        while True:
            page = await service.list(owner, limit=service.max_page_size, cursor=cursor)
            keys.extend(page.items)
            cursor = page.next_cursor
            if cursor is None:
                return keys

    keys = _run(settings, every_key)
    if as_json:
        typer.echo(orjson.dumps([key_dict(key) for key in keys], option=orjson.OPT_INDENT_2))
        return
    Console().print(keys_table(keys))


@keys_app.command()
def revoke(
    key_id: Annotated[str, typer.Argument(metavar="ID", help="The key's id (key_…).")],
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Revoke a key and every key made from it.

    A running server stops accepting them within its auth cache's seconds.
    """
    settings = _settings(config, data_dir)
    _require_database(settings)
    revoked = _run(settings, lambda service: service.revoke(key_id, owner=None))
    key, made = revoked.key, len(revoked.ids) - 1
    shown = key_dict(key)
    typer.echo(f"key {key.id} of owner {key.owner_id} is revoked (since {shown['revoked_at']})")
    if made == 1:
        typer.echo("with it, the 1 key made from it")
    elif made:
        typer.echo(f"with it, the {made} keys made from it")


def parse_rate(text: str) -> float:
    """Requests a second from ``5``, ``0.5`` or ``5/s``."""
    number = text.strip()
    if number.endswith("/s"):
        number = number[:-2].strip()
    try:
        return float(number)
    except ValueError:
        raise typer.BadParameter(
            f"{text!r}: give requests a second, as 5 or 5/s", param_hint="--rate"
        ) from None


def parse_models(text: str) -> list[str]:
    """Model names from ``a,b``: each one named once, none of them empty."""
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise typer.BadParameter(
            f"{text!r}: a model name is empty; give names separated by commas, as echo,llama",
            param_hint="--models",
        )
    return list(dict.fromkeys(names))


def keys_table(keys: list[ApiKey]) -> Table:
    """Keys as a table for people: limits and state, never a secret (``--json`` has it all).

    Newest first. Narrow enough for 80 columns: the limits share one cell, and cells
    wrap between words rather than squeezing the id.
    """
    table = Table(
        title=f"{len(keys)} API key{'s' if len(keys) != 1 else ''}", box=SIMPLE_HEAD, pad_edge=False
    )
    table.add_column("id", no_wrap=True)
    table.add_column("state", no_wrap=True)
    table.add_column("owner", overflow="fold")
    table.add_column("label", overflow="fold")
    table.add_column("limits", min_width=10)
    table.add_column("models", overflow="fold")
    for key in keys:
        limits = key.limits
        table.add_row(
            key.id,
            "revoked" if key.revoked else "active",
            key.owner_id,
            key.label or "",
            f"{number_text(limits.rate)}/s, burst {limits.burst}, {limits.max_streams} streams, "
            f"priority {limits.priority}",
            ", ".join(limits.models) if limits.models is not None else "all",
        )
    return table


def _settings(config: Path | None, data_dir: Path | None) -> Settings:
    return tool_settings(
        "keys",
        config,
        data_dir,
        why="keys are kept only with storage=sqlite (a key made in memory would be gone "
        "when this command ends)",
    )


def _require_database(settings: Settings) -> None:
    require_database("keys", settings)


def _run(settings: Settings, work: Callable[[KeyService], Awaitable[T]]) -> T:
    """Open the store in shared mode, do ``work`` with a `KeyService`, close the store."""

    async def with_service(store: SQLiteStore) -> T:
        service = KeyService(
            store,
            defaults=settings.access,
            models=settings.models.keys(),
            default_page_size=settings.limits.default_page_size,
            max_page_size=settings.limits.max_page_size,
        )
        return await work(service)

    return run_on_store("keys", settings, with_service, invalid_request_exit=2)
