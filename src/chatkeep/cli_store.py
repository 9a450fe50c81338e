"""What the commands that work on a data directory beside a running server share.

``chatkeep keys``, ``export`` and ``import`` load the settings, insist on the SQLite store
(a memory store would forget what they write when they end), and open it in shared mode:
without the data-directory lock, which the server holds, and never running crash recovery.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import typer

from chatkeep.errors import ChatkeepError, InvalidRequest
from chatkeep.settings import Settings, load_settings
from chatkeep.storage.sqlite import DATABASE_FILE, SQLiteStore

T = TypeVar("T")


def tool_settings(
    command: str, config: Path | None, data_dir: Path | None, *, why: str
) -> Settings:
    """The settings, with ``--data-dir`` over them; exit 2 unless the store is SQLite.

    ``why`` ends the refusal: what would be lost with another store.
    """
    settings = load_settings(config, **({"data_dir": data_dir} if data_dir is not None else {}))
    if settings.storage != "sqlite":
        typer.echo(f"chatkeep {command}: storage is {settings.storage!r}: {why}", err=True)
        raise typer.Exit(code=2)
    return settings


def require_database(command: str, settings: Settings) -> None:
    """Exit 2 when the data directory has no database yet (nothing to read)."""
    path = settings.data_dir / DATABASE_FILE
    if not path.is_file():
        typer.echo(f"chatkeep {command}: no database at {path}", err=True)
        raise typer.Exit(code=2)


def run_on_store(
    command: str,
    settings: Settings,
    work: Callable[[SQLiteStore], Awaitable[T]],
    *,
    invalid_request_exit: int = 1,
) -> T:
    """Open the store in shared mode, do ``work`` with it, close it.

    A `ChatkeepError` is one line on stderr and exit 1 (``invalid_request_exit`` for
    `InvalidRequest`: the command's own input was wrong).
    """

    async def main() -> T:
        store = SQLiteStore(
            settings.data_dir / DATABASE_FILE,
            synchronous=settings.sqlite.synchronous,
            busy_timeout_ms=settings.sqlite.busy_timeout_ms,
            readers=1,
            shared=True,
        )
        await store.open()
        try:
            return await work(store)
        finally:
            await store.close()

    try:
        return asyncio.run(main())
    except ChatkeepError as exc:
        typer.echo(f"chatkeep {command}: {exc.message}", err=True)
        code = invalid_request_exit if isinstance(exc, InvalidRequest) else 1
        raise typer.Exit(code=code) from None
