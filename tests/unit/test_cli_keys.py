"""``chatkeep keys``: a secret is printed once, never listed, and works beside a server."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Coroutine
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest
import typer
from typer.testing import CliRunner

from chatkeep.auth.secrets import hash_secret, looks_like_key, new_secret
from chatkeep.cli_keys import keys_app
from chatkeep.domain.keys import ApiKey
from chatkeep.errors import DataDirLocked
from chatkeep.storage.sqlite import DATABASE_FILE, SQLiteStore

T = TypeVar("T")

cli = typer.Typer()
cli.add_typer(keys_app, name="keys")


@cli.callback()
def root() -> None:
    """Keeps ``keys`` a group of its own, as in the real command line."""


def run(data_dir: Path, *args: str) -> Any:
    return CliRunner().invoke(cli, ["keys", *args, "--data-dir", str(data_dir)])


def created(output: str) -> tuple[str, str]:
    key_id = re.search(r"created key (key_\w+)", output)
    secret = re.search(r"secret: (\S+)", output)
    assert key_id is not None and secret is not None, output
    return key_id.group(1), secret.group(1)


class ServerStore:
    """A store opened as a server opens it (holding the directory's lock), on its own loop."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="server-store")

    def __enter__(self) -> ServerStore:
        self.thread.start()
        self.store = self.call(self._open())
        return self

    def __exit__(self, *exc: object) -> None:
        self.call(self.store.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()

    async def _open(self) -> SQLiteStore:
        store = SQLiteStore(self.data_dir / DATABASE_FILE)
        await store.open()
        return store

    def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=10)


def test_create_prints_the_secret_once_and_list_never(tmp_path: Path) -> None:
    result = run(tmp_path, "create", "--owner", "alice", "--label", "laptop", "--rate", "5/s")
    assert result.exit_code == 0, result.output
    key_id, secret = created(result.output)
    assert looks_like_key(secret)
    assert result.output.count(secret) == 1
    assert "shown only now" in result.output

    table = run(tmp_path, "list")
    assert table.exit_code == 0, table.output
    assert key_id in table.output and "alice" in table.output
    assert secret not in table.output and secret[3:20] not in table.output

    listed = run(tmp_path, "list", "--json")
    assert listed.exit_code == 0, listed.output
    assert secret[3:20] not in listed.output
    [key] = orjson.loads(listed.output)
    assert key["id"] == key_id and key["label"] == "laptop"
    assert key["rate"] == 5.0 and key["created_by"] == "admin" and key["revoked_at"] is None
    assert "secret" not in key


def test_defaults_come_from_the_settings_and_options_override_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHATKEEP_KEY_BURST", "7")
    plain = run(tmp_path, "create", "--owner", "bob")
    assert plain.exit_code == 0, plain.output
    chosen = run(
        tmp_path,
        *("create", "--owner", "bob", "--rate", "0.5", "--max-streams", "3"),
        *("--priority", "4", "--models", "echo"),
    )
    assert chosen.exit_code == 0, chosen.output
    newest, first = orjson.loads(run(tmp_path, "list", "--json", "--owner", "bob").output)
    assert (first["rate"], first["burst"], first["max_streams"], first["priority"]) == (
        20.0,
        7,
        8,
        0,
    )
    assert first["models"] is None
    assert (newest["rate"], newest["max_streams"], newest["priority"]) == (0.5, 3, 4)
    assert newest["models"] == ["echo"]


def test_list_filters_by_owner(tmp_path: Path) -> None:
    for owner in ("alice", "bob", "alice"):
        assert run(tmp_path, "create", "--owner", owner).exit_code == 0
    alice = orjson.loads(run(tmp_path, "list", "--json", "--owner", "alice").output)
    assert [key["owner_id"] for key in alice] == ["alice", "alice"]
    assert len(orjson.loads(run(tmp_path, "list", "--json").output)) == 3


def test_revoke_marks_the_key_and_an_unknown_id_fails(tmp_path: Path) -> None:
    key_id, _ = created(run(tmp_path, "create", "--owner", "alice").output)
    result = run(tmp_path, "revoke", key_id)
    assert result.exit_code == 0, result.output
    assert "revoked" in result.output
    [key] = orjson.loads(run(tmp_path, "list", "--json").output)
    assert key["revoked_at"] is not None
    missing = run(tmp_path, "revoke", "key_nope")
    assert missing.exit_code == 1 and "not found" in missing.output


def test_the_commands_work_while_a_server_holds_the_directory(tmp_path: Path) -> None:
    with ServerStore(tmp_path) as server:
        with pytest.raises(DataDirLocked):  # an ordinary second store is refused
            server.call(SQLiteStore(tmp_path / DATABASE_FILE).open())
        result = run(tmp_path, "create", "--owner", "alice")
        assert result.exit_code == 0, result.output
        key_id, secret = created(result.output)
        found: ApiKey | None = server.call(server.store.find_api_key(hash_secret(secret)))
        assert found is not None and found.id == key_id and not found.revoked

        assert key_id in run(tmp_path, "list").output
        assert run(tmp_path, "revoke", key_id).exit_code == 0
        found = server.call(server.store.find_api_key(hash_secret(secret)))
        assert found is not None and found.revoked
        assert server.store._lock.held  # the CLI never took (or released) the lock


def test_bad_options_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    for args in [
        ("--rate", "fast"),
        ("--rate", "0"),
        ("--priority", "12"),
        ("--models", "echo,nowhere"),
        ("--burst", "0"),
    ]:
        result = run(tmp_path, "create", "--owner", "alice", *args)
        assert result.exit_code == 2, (args, result.output)
        assert "secret" not in result.output
    assert orjson.loads(run(tmp_path, "list", "--json").output) == []


def test_memory_storage_keeps_no_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATKEEP_STORAGE", "memory")
    result = run(tmp_path, "create", "--owner", "alice")
    assert result.exit_code == 2
    assert "storage=sqlite" in result.output and "secret" not in result.output
    assert not (tmp_path / DATABASE_FILE).exists()


def test_list_without_a_database_says_so(tmp_path: Path) -> None:
    result = run(tmp_path / "nowhere", "list")
    assert result.exit_code == 2 and "no database" in result.output
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize(
    ("models", "said"),
    [("", "a model name is empty"), ("echo,,echo", "a model name is empty"), (" , ", "empty")],
)
def test_empty_model_names_are_refused_clearly(tmp_path: Path, models: str, said: str) -> None:
    result = run(tmp_path, "create", "--owner", "alice", "--models", models)
    assert result.exit_code == 2, result.output
    assert said in result.output and "not configured" not in result.output
    assert "secret" not in result.output


def test_repeated_model_names_are_kept_once(tmp_path: Path) -> None:
    result = run(tmp_path, "create", "--owner", "alice", "--models", "echo, echo")
    assert result.exit_code == 0, result.output
    [key] = orjson.loads(run(tmp_path, "list", "--json").output)
    assert key["models"] == ["echo"]


def test_the_owner_cap_does_not_bind_the_admin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHATKEEP_AUTH_MAX_KEYS_PER_OWNER", "1")
    for _ in range(2):
        result = run(tmp_path, "create", "--owner", "alice")
        assert result.exit_code == 0, result.output
    assert len(orjson.loads(run(tmp_path, "list", "--json").output)) == 2


def test_revoke_takes_the_keys_made_from_the_key_along(tmp_path: Path) -> None:
    root_id, _ = created(run(tmp_path, "create", "--owner", "alice").output)
    with ServerStore(tmp_path) as server:  # a server's key mints a key of its own
        [root] = server.call(server.store.list_api_keys(None, limit=10, cursor=None)).items
        family, budget = root.family_of_its_keys()
        child = replace(
            root, id="key_child", created_by=root.id, family_id=family, family_budget=budget
        )
        server.call(server.store.create_api_key(child, secret_hash=hash_secret(new_secret())))
    result = run(tmp_path, "revoke", root_id)
    assert result.exit_code == 0, result.output
    assert "with it, the 1 key made from it" in result.output
    keys = orjson.loads(run(tmp_path, "list", "--json").output)
    assert {key["id"]: key["revoked_at"] is not None for key in keys} == {
        root_id: True,
        "key_child": True,
    }
