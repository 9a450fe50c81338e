"""A key's life on a real server: made by the CLI, used, revoked; never written to a log.

The server logs at DEBUG level in both formats' worst case (text), and the test sends every
kind of request that leaves a log line: good and bad keys, refusals, a failing backend,
the admin routes. Then neither the key's secret nor the admin token may appear in the log
file, nor the secret in the database file.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.e2e.server import CLEAN_EXIT, ServerProcess

pytestmark = pytest.mark.e2e

ADMIN_TOKEN = "admin-token-" + "z" * 32


def _chatkeep(*args: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "chatkeep", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    return done.stdout


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_key_is_made_used_revoked_and_never_logged(tmp_path: Path, log_format: str) -> None:
    data_dir = tmp_path / "data"
    models = '{"echo": {"provider": "echo"}, "down": {"provider": "openai", "url": "http://127.0.0.1:9"}}'
    settings = {
        "CHATKEEP_AUTH": "keys",
        "CHATKEEP_ADMIN_TOKEN": ADMIN_TOKEN,
        "CHATKEEP_LOG_LEVEL": "DEBUG",
        "CHATKEEP_LOG_FORMAT": log_format,
        "CHATKEEP_MODELS": models,
    }
    server = ServerProcess(data_dir, env=settings)
    env = {**server._env}  # the server's own environment: same data directory and settings
    created = _chatkeep("keys", "create", "--owner", "alice", env=env)
    secret = re.search(r"\bck_[A-Za-z0-9_-]{43}\b", created)
    key_id = re.search(r"\bkey_[0-9a-f]+\b", created)
    assert secret and key_id, created
    listed = _chatkeep("keys", "list", "--json", env=env)
    assert key_id.group(0) in listed and secret.group(0) not in listed

    server.start()
    try:
        base = server.url
        alice = {"authorization": f"Bearer {secret.group(0)}"}
        wrong = {"x-api-key": secret.group(0)[:-4] + "AAAA"}
        conversation = httpx.post(f"{base}/api/conversations", json={}, headers=alice)
        assert conversation.status_code == 201
        cid = conversation.json()["id"]
        sent = httpx.post(
            f"{base}/api/conversations/{cid}/messages", json={"content": "hi"}, headers=alice
        )
        assert sent.status_code == 200
        failing = httpx.post(
            f"{base}/v1/chat/completions",
            json={"model": "down", "messages": [{"role": "user", "content": "x"}]},
            headers=alice,
        )
        assert failing.status_code >= 500
        assert httpx.get(f"{base}/v1/models", headers=wrong).status_code == 401
        assert httpx.get(f"{base}/admin/stats", headers=alice).status_code == 403
        assert httpx.get(f"{base}/api/keys", headers={"x-api-key": ADMIN_TOKEN}).status_code == 403
        revoked = httpx.delete(
            f"{base}/admin/keys/{key_id.group(0)}", headers={"x-api-key": ADMIN_TOKEN}
        )
        assert revoked.status_code == 200 and revoked.json()["revoked_at"]
        after = httpx.get(f"{base}/api/conversations", headers=alice)
        assert after.status_code == 401
    finally:
        assert server.stop() in CLEAN_EXIT
    log = server.log.read_text()
    assert "authentication failed from 127.0.0.1: an unknown or revoked key" in log
    assert "provider_unavailable" in log
    for credential in (secret.group(0), ADMIN_TOKEN, secret.group(0)[3:]):
        assert credential not in log
    database = b"".join(path.read_bytes() for path in data_dir.glob("chatkeep.sqlite3*"))
    assert secret.group(0).encode() not in database
    assert secret.group(0)[3:].encode() not in database
