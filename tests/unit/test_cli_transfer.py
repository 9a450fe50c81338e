"""``chatkeep export`` / ``chatkeep import``: files in, files out, next to a running server."""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

import orjson
import pytest
import typer
import yaml
from typer.testing import CliRunner

from chatkeep import cli_transfer
from chatkeep.cli_transfer import register
from chatkeep.domain.records import Usage
from chatkeep.storage.sqlite import DATABASE_FILE, SQLiteStore
from chatkeep.storage.sqlite.lock import DataDirLock

OWNER = "alice"


def _cli() -> typer.Typer:
    cli = typer.Typer()
    register(cli)
    return cli


def _invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(_cli(), list(args))
    # A command ends by exiting, never by an exception the runner caught (a traceback).
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


def _one_line(said: str) -> str:
    """The message of a command that failed: exactly one line, no traceback."""
    assert said.endswith("\n") and said.count("\n") == 1, said
    assert "Traceback" not in said
    return said


async def _fill(data_dir: Path, owner: str = OWNER, conversations: int = 3) -> list[str]:
    store = SQLiteStore(data_dir / DATABASE_FILE)
    await store.open()
    try:
        ids = []
        for n in range(conversations):
            conversation = await store.create_conversation(owner, model="echo", title=f"#{n} ✓")
            start = await store.begin_reply(
                owner, conversation.id, content=f"hello {n}", client_message_id=f"c{n}"
            )
            await store.finish_reply(
                owner,
                conversation.id,
                reply_to=start.user_message.id,
                content="cut",
                status="incomplete",
                reason="stopped",
                reason_code="shutdown",
                usage=Usage(1, 2),
            )
            ids.append(conversation.id)
        return ids
    finally:
        await store.close()


async def _dump(data_dir: Path, owner: str = OWNER) -> list[tuple[object, list[object]]]:
    store = SQLiteStore(data_dir / DATABASE_FILE)
    await store.open()
    try:
        page = await store.list_conversations(owner, status=None, limit=100, cursor=None)
        return [(c, (await store.list_messages(owner, c.id, limit=100)).items) for c in page.items]
    finally:
        await store.close()


def test_export_then_import_moves_everything(tmp_path: Path) -> None:
    source, target = tmp_path / "source", tmp_path / "target"
    asyncio.run(_fill(source))
    out = tmp_path / "all.json"
    code, _, said = _invoke(
        "export", "--data-dir", str(source), "--owner", OWNER, "--output", str(out)
    )
    assert code == 0, said
    assert "exported 3 conversations, 6 messages" in said
    assert not list(tmp_path.glob(".*.partial"))
    code, report, said = _invoke("import", str(out), "--data-dir", str(target), "--owner", OWNER)
    assert code == 0, said
    assert len(orjson.loads(report)["created"]) == 3
    assert asyncio.run(_dump(target)) == asyncio.run(_dump(source))
    code, report, _ = _invoke("import", str(out), "--data-dir", str(target), "--owner", OWNER)
    assert code == 0 and len(orjson.loads(report)["skipped"]) == 3


def test_export_one_conversation_as_yaml_to_standard_output(tmp_path: Path) -> None:
    ids = asyncio.run(_fill(tmp_path, owner="default"))
    code, out, _ = _invoke(
        "export", "--data-dir", str(tmp_path), "--conversation", ids[1], "--format", "yaml"
    )
    assert code == 0
    document = yaml.safe_load(out)
    assert [c["id"] for c in document["conversations"]] == [ids[1]]


def test_the_format_follows_the_output_name(tmp_path: Path) -> None:
    asyncio.run(_fill(tmp_path))
    out = tmp_path / "all.yml"
    assert _invoke("export", "--data-dir", str(tmp_path), "--owner", OWNER, "-o", str(out))[0] == 0
    assert out.read_text().startswith("format: chatkeep.export\n")


def test_export_works_while_a_server_holds_the_data_directory(tmp_path: Path) -> None:
    asyncio.run(_fill(tmp_path))
    lock = DataDirLock(tmp_path)
    lock.acquire()  # as a running server does
    try:
        code, out, said = _invoke("export", "--data-dir", str(tmp_path), "--owner", OWNER)
    finally:
        lock.release()
    assert code == 0, said
    assert len(orjson.loads(out)["conversations"]) == 3


def test_export_of_a_conversation_that_is_not_the_owners_fails_and_writes_nothing(
    tmp_path: Path,
) -> None:
    ids = asyncio.run(_fill(tmp_path, owner="bob"))
    out = tmp_path / "one.json"
    code, _, said = _invoke(
        "export", "--data-dir", str(tmp_path), "--conversation", ids[0], "-o", str(out)
    )
    assert code == 1
    assert f"conversation {ids[0]} not found" in said
    assert not out.exists() and not list(tmp_path.glob(".*.partial"))


def test_import_says_what_it_rejected_and_exits_1(tmp_path: Path) -> None:
    document = {
        "format": "chatkeep.export",
        "version": 1,
        "exported_at": 1,
        "conversations": [{"id": "conv_x", "model": "echo"}],
    }
    path = tmp_path / "bad.json"
    path.write_bytes(orjson.dumps(document))
    code, report, _ = _invoke("import", str(path), "--data-dir", str(tmp_path / "d"))
    assert code == 1
    (rejected,) = orjson.loads(report)["rejected"]
    assert rejected["id"] == "conv_x" and "status: required, but missing" in rejected["reason"]


@pytest.mark.parametrize(
    ("content", "options", "said"),
    [
        (b"not: [a document", [], "not YAML"),
        (b'{"format": "chatkeep.export", "version": 9}', [], "newer chatkeep"),
        (b"{}" + b" " * 100, ["--max-bytes", "50"], "over --max-bytes 50"),
    ],
)
def test_import_of_no_document_exits_2_and_stores_nothing(
    tmp_path: Path, content: bytes, options: list[str], said: str
) -> None:
    path = tmp_path / "file"
    path.write_bytes(content)
    data_dir = tmp_path / "d"
    code, _, message = _invoke("import", str(path), "--data-dir", str(data_dir), *options)
    assert code == 2
    assert said in message
    assert not (data_dir / DATABASE_FILE).exists()


def test_memory_storage_has_nothing_to_export_or_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHATKEEP_STORAGE", "memory")
    code, _, said = _invoke("export", "--data-dir", str(tmp_path))
    assert code == 2 and "storage=sqlite" in said


def test_export_counts_in_words_that_agree(tmp_path: Path) -> None:
    ids = asyncio.run(_fill(tmp_path, conversations=1))
    code, _, said = _invoke("export", "--data-dir", str(tmp_path), "--owner", OWNER)
    assert code == 0 and "exported 1 conversation, 2 messages\n" in said
    code, _, said = _invoke(
        "export", "--data-dir", str(tmp_path), "--owner", "nobody", "-o", str(tmp_path / "x.json")
    )
    assert code == 0 and "exported 0 conversations, 0 messages to " in said
    assert ids


@pytest.mark.parametrize(
    ("output", "said"),
    [
        ("missing/dir/x.json", "No such file or directory"),
        ("a-directory", "it is a directory"),
        ("a-file/x.json", "Not a directory"),
    ],
)
def test_export_to_a_place_it_cannot_write_says_so_in_one_line(
    tmp_path: Path, output: str, said: str
) -> None:
    data_dir = tmp_path / "data"
    ids = asyncio.run(_fill(data_dir))
    (tmp_path / "a-directory").mkdir()
    (tmp_path / "a-file").write_text("")
    target = tmp_path / output
    for options in (["--owner", OWNER], ["--owner", OWNER, "--conversation", ids[0]]):
        code, _, message = _invoke(
            "export", "--data-dir", str(data_dir), *options, "--output", str(target)
        )
        assert code == 1
        assert _one_line(message) == f"chatkeep export: cannot write {target}: {said}\n"
    assert list((tmp_path / "a-directory").iterdir()) == []
    assert not list(tmp_path.rglob("*.partial"))


@pytest.mark.parametrize(
    "failure",
    [
        OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)),
        PermissionError(errno.EACCES, os.strerror(errno.EACCES)),
        OSError(errno.EIO, os.strerror(errno.EIO)),
    ],
)
def test_export_that_fails_to_write_leaves_nothing_and_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: OSError
) -> None:
    data_dir = tmp_path / "data"
    asyncio.run(_fill(data_dir))
    out = tmp_path / "all.json"
    out.write_text("the last good export")

    async def failing(chunks: AsyncIterator[bytes], file: BinaryIO) -> None:
        file.write(await anext(chunks))
        raise failure  # as a full disk (or a revoked permission) answers the next write

    monkeypatch.setattr(cli_transfer, "_write_all", failing)
    code, _, said = _invoke("export", "--data-dir", str(data_dir), "--owner", OWNER, "-o", str(out))
    assert code == 1
    assert _one_line(said) == f"chatkeep export: cannot write {out}: {failure.strerror}\n"
    assert out.read_text() == "the last good export"
    assert not list(tmp_path.glob(".*.partial"))


def test_export_to_standard_output_that_fails_says_so_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asyncio.run(_fill(tmp_path))

    async def failing(chunks: AsyncIterator[bytes], file: BinaryIO) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(cli_transfer, "_write_all", failing)
    code, _, said = _invoke("export", "--data-dir", str(tmp_path), "--owner", OWNER)
    assert code == 1
    assert _one_line(said) == (
        "chatkeep export: cannot write to standard output: No space left on device\n"
    )


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads and writes whatever the mode says")
def test_export_into_a_directory_without_permission_says_so(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    asyncio.run(_fill(data_dir))
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    code, _, said = _invoke(
        "export", "--data-dir", str(data_dir), "--owner", OWNER, "-o", str(locked / "x.json")
    )
    assert code == 1 and "Permission denied" in _one_line(said)


@pytest.mark.parametrize(
    ("name", "said"),
    [("missing.json", "No such file or directory"), ("a-directory", "Is a directory")],
)
def test_import_of_a_file_it_cannot_read_says_so_in_one_line(
    tmp_path: Path, name: str, said: str
) -> None:
    (tmp_path / "a-directory").mkdir()
    data_dir = tmp_path / "d"
    code, _, message = _invoke("import", str(tmp_path / name), "--data-dir", str(data_dir))
    assert code == 1
    assert _one_line(message) == f"chatkeep import: cannot read {tmp_path / name}: {said}\n"
    assert not data_dir.exists()


def test_import_of_a_file_without_permission_says_so_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "secret.json"
    path.write_bytes(b"{}")
    path.chmod(0)
    if os.geteuid() == 0:  # root reads it anyway: refuse as the system would
        opening = Path.open

        def refusing(self: Path, *args: object, **kwargs: object) -> object:
            if self == path:
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
            return opening(self, *args, **kwargs)  # type: ignore[call-overload]

        monkeypatch.setattr(Path, "open", refusing)
    code, _, said = _invoke("import", str(path), "--data-dir", str(tmp_path / "d"))
    assert code == 1
    assert _one_line(said) == f"chatkeep import: cannot read {path}: Permission denied\n"


def test_import_into_a_data_directory_it_cannot_make_says_so_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "empty.json"
    path.write_bytes(
        orjson.dumps(
            {"format": "chatkeep.export", "version": 1, "exported_at": 1, "conversations": []}
        )
    )
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code, _, said = _invoke("import", str(path), "--data-dir", str(blocker / "d"))
    assert code == 1
    assert _one_line(said).startswith(f"chatkeep import: cannot make {blocker / 'd'}: ")


def test_import_reads_no_more_than_max_bytes(tmp_path: Path) -> None:
    path = tmp_path / "big.json"
    path.write_bytes(b"{" + b" " * 1000 + b"}")
    code, _, said = _invoke(
        "import", str(path), "--data-dir", str(tmp_path / "d"), "--max-bytes", "100"
    )
    assert code == 2
    assert (
        _one_line(said) == f"chatkeep import: {path} is 1002 bytes, over --max-bytes 100 (json)\n"
    )


@pytest.mark.parametrize(
    ("owner", "said"),
    [
        (" bob", "--owner: must be printable characters, without leading or trailing spaces"),
        ("bob\n", "--owner: must be printable characters"),
        ("", "--owner: must be 1 to 200 characters"),
        ("b" * 201, "--owner: must be 1 to 200 characters"),
    ],
)
def test_an_owner_no_key_could_have_is_refused(tmp_path: Path, owner: str, said: str) -> None:
    data_dir = tmp_path / "data"
    asyncio.run(_fill(data_dir))
    out = tmp_path / "all.json"
    code, _, message = _invoke(
        "export", "--data-dir", str(data_dir), "--owner", owner, "-o", str(out)
    )
    assert code == 2 and said in _one_line(message) and not out.exists()
    assert _invoke("export", "--data-dir", str(data_dir), "--owner", OWNER, "-o", str(out))[0] == 0
    target = tmp_path / "target"
    code, _, message = _invoke("import", str(out), "--data-dir", str(target), "--owner", owner)
    assert code == 2 and said in _one_line(message)
    assert not (target / DATABASE_FILE).exists()
