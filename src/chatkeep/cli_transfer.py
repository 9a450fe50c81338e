"""``chatkeep export`` and ``chatkeep import``: conversations to and from a file.

Both work next to a running server: they open the database in shared mode
(`SQLiteStore(shared=True)`), without the data directory's lock, and never run crash
recovery. An export reads page by page, in bounded memory, into a temporary file renamed
over ``--output`` only once complete (a failed export leaves no half document). An
import reads the whole file (at most ``--max-bytes``; decoding costs a few times its size
in memory) and stores each conversation in one transaction; the report is printed as JSON.

Exit codes: ``0`` done (every conversation imported or skipped), ``1`` some conversations
rejected, or storage unavailable, or no such conversation; ``2`` bad options, a file that
is not an export document, or settings that keep nothing (``storage=memory``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Annotated, BinaryIO, Literal, TypeVar

import orjson
import typer

from chatkeep.errors import ChatkeepError
from chatkeep.settings import Settings, load_settings
from chatkeep.storage.sqlite import DATABASE_FILE, SQLiteStore
from chatkeep.transfer.documents import (
    InvalidDocument,
    Kind,
    document_depth,
    kind_of_file,
    parse,
    read_head,
)
from chatkeep.transfer.export import ExportCounts, export_conversation, export_owner
from chatkeep.transfer.importer import ImportReport, import_document

T = TypeVar("T")

#: ``--max-bytes`` when not given. A whole file is decoded in memory: JSON costs about 8
#: times its size (a 60 MB export of 100 000 messages peaks near 460 MB), YAML about 25 times
#: and ten times the time, so YAML gets the smaller bound.
DEFAULT_MAX_IMPORT_BYTES: dict[Kind, int] = {"json": 256 * 1024 * 1024, "yaml": 64 * 1024 * 1024}

OwnerOption = Annotated[
    str | None,
    typer.Option("--owner", help="Whose conversations (default: CHATKEEP_DEFAULT_OWNER)."),
]
ConfigOption = Annotated[
    Path | None, typer.Option("--config", help="TOML settings file.", exists=True)
]
DataDirOption = Annotated[
    Path | None,
    typer.Option("--data-dir", help="The data directory (default: from the settings)."),
]


def export_command(
    owner: OwnerOption = None,
    conversation: Annotated[
        str | None,
        typer.Option("--conversation", metavar="ID", help="Only this conversation."),
    ] = None,
    kind: Annotated[
        Literal["json", "yaml"] | None,
        typer.Option("--format", help="json or yaml (default: from the --output name, else json)."),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="The file to write (default: standard output)."),
    ] = None,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Export conversations with every message (docs/export-format.md), streaming."""
    settings = _settings("export", config, data_dir)
    _require_database(settings)
    owner_id = owner or settings.default_owner
    if kind is None:
        named_yaml = output is not None and output.suffix.lower() in (".yaml", ".yml")
        kind = "yaml" if named_yaml else "json"
    counts = ExportCounts()

    async def chunks(store: SQLiteStore) -> AsyncIterator[bytes]:
        exported_at = time.time()
        if conversation is None:
            source = export_owner(store, owner_id, kind, exported_at=exported_at, counts=counts)
        else:
            record = await store.get_conversation(owner_id, conversation)
            source = export_conversation(
                store, owner_id, record, kind, exported_at=exported_at, counts=counts
            )
        async for chunk in source:
            yield chunk

    async def write(store: SQLiteStore) -> None:
        if output is None:
            await _write_all(chunks(store), sys.stdout.buffer)
            return
        partial = output.with_name(f".{output.name}.partial")
        try:
            with partial.open("wb") as file:
                await _write_all(chunks(store), file)
                file.flush()
                os.fsync(file.fileno())
            partial.replace(output)
        finally:
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()

    _run("export", settings, write)
    where = f" to {output}" if output is not None else ""
    typer.echo(
        f"exported {counts.conversations} conversations, {counts.messages} messages{where}",
        err=True,
    )


def import_command(
    file: Annotated[
        Path,
        typer.Argument(
            exists=True, dir_okay=False, help="An export document, JSON or YAML (*.yaml)."
        ),
    ],
    owner: OwnerOption = None,
    max_bytes: Annotated[
        int | None,
        typer.Option(
            "--max-bytes", min=1, help="Refuse a larger file (default: 256 MiB JSON, 64 MiB YAML)."
        ),
    ] = None,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Import conversations from an export document; prints what was created, skipped and
    rejected. Importing the same file again stores nothing twice."""
    settings = _settings("import", config, data_dir)
    owner_id = owner or settings.default_owner
    with file.open("rb") as opened:
        kind = kind_of_file(file.name, opened.read(64))
    limit = max_bytes if max_bytes is not None else DEFAULT_MAX_IMPORT_BYTES[kind]
    size = file.stat().st_size
    if size > limit:
        typer.echo(
            f"chatkeep import: {file} is {size} bytes, over --max-bytes {limit} ({kind})",
            err=True,
        )
        raise typer.Exit(code=2)
    data = file.read_bytes()
    try:
        document = parse(data, kind, max_depth=document_depth(settings.limits))
        read_head(document)  # refused whole before the database is even opened
    except InvalidDocument as exc:
        typer.echo(f"chatkeep import: {file}: {exc.message}", err=True)
        raise typer.Exit(code=2) from None
    del data  # the decoded document is all that is needed now
    settings.data_dir.mkdir(parents=True, exist_ok=True)

    async def run(store: SQLiteStore) -> ImportReport:
        return await import_document(store, owner_id, document, settings.limits)

    report = _run("import", settings, run)
    typer.echo(orjson.dumps(report.as_dict(), option=orjson.OPT_INDENT_2))
    typer.echo(
        f"{len(report.created)} created, {len(report.skipped)} skipped, "
        f"{len(report.rejected)} rejected",
        err=True,
    )
    if report.rejected:
        raise typer.Exit(code=1)


def register(cli: typer.Typer) -> None:
    """Add the ``export`` and ``import`` commands to ``cli``."""
    cli.command("export")(export_command)
    cli.command("import")(import_command)


async def _write_all(chunks: AsyncIterator[bytes], file: BinaryIO) -> None:
    # Plain blocking writes: this command's event loop has nothing else to serve, and
    # the next chunk is read only once this one is written (so memory stays flat).
    async for chunk in chunks:
        file.write(chunk)


def _settings(command: str, config: Path | None, data_dir: Path | None) -> Settings:
    settings = load_settings(config, **({"data_dir": data_dir} if data_dir is not None else {}))
    if settings.storage != "sqlite":
        typer.echo(
            f"chatkeep {command}: storage is {settings.storage!r}: conversations are kept "
            "on disk only with storage=sqlite",
            err=True,
        )
        raise typer.Exit(code=2)
    return settings


def _require_database(settings: Settings) -> None:
    path = settings.data_dir / DATABASE_FILE
    if not path.is_file():
        typer.echo(f"chatkeep export: no database at {path}", err=True)
        raise typer.Exit(code=2)


def _run(command: str, settings: Settings, work: Callable[[SQLiteStore], Awaitable[T]]) -> T:
    """Open the store in shared mode, do ``work`` with it, close it."""

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
        raise typer.Exit(code=1) from None
