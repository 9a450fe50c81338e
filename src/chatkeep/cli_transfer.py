"""``chatkeep export`` and ``chatkeep import``: conversations to and from a file.

Both work next to a running server: they open the database in shared mode
(`SQLiteStore(shared=True)`), without the data directory's lock, and never run crash
recovery. An export reads page by page, in bounded memory, into a temporary file renamed
over ``--output`` only once complete (a failed export leaves no half document). An
import reads the whole file (at most ``--max-bytes``; decoding costs a few times its size
in memory) and stores each conversation in one transaction; the report is printed as JSON.

Exit codes: ``0`` done (every conversation imported or skipped), ``1`` some conversations
rejected, or storage unavailable, or no such conversation, or a file that cannot be read
or written (said in one line, never a traceback); ``2`` bad options (an ``--owner`` no key
could have), a file that is not an export document, or settings that keep nothing
(``storage=memory``).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Annotated, BinaryIO, Literal, TypeVar

import orjson
import typer

from chatkeep.auth.grants import check_name
from chatkeep.cli_store import require_database, run_on_store, tool_settings
from chatkeep.errors import ChatkeepError, InvalidRequest
from chatkeep.settings import Settings
from chatkeep.storage.sqlite import SQLiteStore
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


class FileTrouble(ChatkeepError):
    """A file the command cannot read or write (the operating system's reason given)."""


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
    owner_id = _owner("export", owner, settings)
    _require_database(settings)
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
            try:
                await _write_all(chunks(store), sys.stdout.buffer)
                sys.stdout.buffer.flush()  # a full disk answers here, not at exit
            except OSError as exc:
                raise FileTrouble(f"cannot write to standard output: {_why(exc)}") from None
            return
        if output.is_dir():  # else a whole export would be written, then not renamed
            raise FileTrouble(f"cannot write {output}: it is a directory")
        partial = output.with_name(f".{output.name}.partial")
        try:
            with partial.open("wb") as file:
                await _write_all(chunks(store), file)
                file.flush()
                os.fsync(file.fileno())
            partial.replace(output)
        except OSError as exc:  # no directory, no permission, a full disk…
            raise FileTrouble(f"cannot write {output}: {_why(exc)}") from None
        finally:
            with contextlib.suppress(OSError):
                partial.unlink()

    _run("export", settings, write)
    where = f" to {output}" if output is not None else ""
    typer.echo(
        f"exported {_counted(counts.conversations, 'conversation')}, "
        f"{_counted(counts.messages, 'message')}{where}",
        err=True,
    )


def import_command(
    file: Annotated[Path, typer.Argument(help="An export document, JSON or YAML (*.yaml).")],
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
    owner_id = _owner("import", owner, settings)
    try:
        kind, data = _read_document(file, max_bytes)
    except OSError as exc:  # missing, a directory, no permission, an I/O error…
        typer.echo(f"chatkeep import: cannot read {file}: {_why(exc)}", err=True)
        raise typer.Exit(code=1) from None
    try:
        document = parse(data, kind, max_depth=document_depth(settings.limits))
        read_head(document)  # refused whole before the database is even opened
    except InvalidDocument as exc:
        typer.echo(f"chatkeep import: {file}: {exc.message}", err=True)
        raise typer.Exit(code=2) from None
    del data  # the decoded document is all that is needed now
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        typer.echo(f"chatkeep import: cannot make {settings.data_dir}: {_why(exc)}", err=True)
        raise typer.Exit(code=1) from None

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


def _read_document(file: Path, max_bytes: int | None) -> tuple[Kind, bytes]:
    """The file's syntax and bytes; exits (2) when it is over ``--max-bytes``."""
    with file.open("rb") as opened:
        data = opened.read(64)
        kind = kind_of_file(file.name, data)
        limit = max_bytes if max_bytes is not None else DEFAULT_MAX_IMPORT_BYTES[kind]
        # Read at most one byte past the limit: a file that grows meanwhile is still bounded.
        data += opened.read(max(limit + 1 - len(data), 0))
        if len(data) > limit:
            size = max(os.fstat(opened.fileno()).st_size, len(data))
            typer.echo(
                f"chatkeep import: {file} is {size} bytes, over --max-bytes {limit} ({kind})",
                err=True,
            )
            raise typer.Exit(code=2)
    return kind, data


def _owner(command: str, owner: str | None, settings: Settings) -> str:
    """``--owner``, checked as ``chatkeep keys create`` checks it; else the default owner."""
    if owner is None:
        return settings.default_owner
    try:
        check_name("owner", owner)
    except InvalidRequest as exc:
        typer.echo(f"chatkeep {command}: --{exc.message}", err=True)
        raise typer.Exit(code=2) from None
    return owner


def _why(exc: OSError) -> str:
    """The operating system's reason, without the path (the message names the file)."""
    return exc.strerror or str(exc)


def _counted(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


async def _write_all(chunks: AsyncIterator[bytes], file: BinaryIO) -> None:
    # Plain blocking writes: this command's event loop has nothing else to serve, and
    # the next chunk is read only once this one is written (so memory stays flat).
    async for chunk in chunks:
        file.write(chunk)


def _settings(command: str, config: Path | None, data_dir: Path | None) -> Settings:
    return tool_settings(
        command, config, data_dir, why="conversations are kept on disk only with storage=sqlite"
    )


def _require_database(settings: Settings) -> None:
    require_database("export", settings)


def _run(command: str, settings: Settings, work: Callable[[SQLiteStore], Awaitable[T]]) -> T:
    """Open the store in shared mode, do ``work`` with it, close it."""
    return run_on_store(command, settings, work)
