"""``chatkeep export`` / ``chatkeep import``: files in, files out, next to a running server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest
import typer
import yaml
from typer.testing import CliRunner

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
    return result.exit_code, result.stdout, result.stderr


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
