"""Admin endpoints: auth, memory view, profiler; the serve command's bind guard."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from typer.testing import CliRunner

from chatkeep.cli import app as cli_app
from tests.api.conftest import ClientFactory


async def test_loopback_reaches_admin_without_token(client: httpx.AsyncClient) -> None:
    memory = await client.get("/admin/memory")
    assert memory.status_code == 200
    body = memory.json()
    assert body["budget"]["bytes"] > 0
    assert body["tier"] in {"ok", "warn", "evict", "shed", "critical"}
    assert "reply_streams" in {s["name"] for s in body["structures"]}
    stats = (await client.get("/admin/stats")).json()
    assert stats["generations"]["max_inflight"] > 0
    assert stats["storage"]["backend"] == "sqlite"


async def test_non_loopback_without_token_is_refused(make_client: ClientFactory) -> None:
    client = await make_client()
    remote = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=client._transport.app, client=("10.1.2.3", 4567)),  # type: ignore[attr-defined]
        base_url="http://chatkeep.test",
    )
    async with remote:
        response = await remote.get("/admin/stats")
    assert response.status_code == 401
    assert "CHATKEEP_ADMIN_TOKEN" in response.json()["error"]["message"]


FORWARDING_HEADERS = {
    "Forwarded": "for=203.0.113.7;proto=https",
    "X-Forwarded-For": "203.0.113.7",
    "X-Forwarded-Host": "chat.example.com",
    "X-Forwarded-Proto": "https",
    "X-Original-Forwarded-For": "203.0.113.7",
    "X-Real-IP": "203.0.113.7",
    "X-Client-IP": "203.0.113.7",
    "True-Client-IP": "203.0.113.7",
    "CF-Connecting-IP": "203.0.113.7",
    "Fastly-Client-IP": "203.0.113.7",
    "X-Cluster-Client-IP": "203.0.113.7",
    "X-Azure-ClientIP": "203.0.113.7",
    "X-Azure-SocketIP": "203.0.113.7",
    "CDN-Loop": "cloudflare",
    "CloudFront-Viewer-Address": "203.0.113.7:46532",
    "Akamai-Origin-Hop": "2",
    "Via": "1.1 proxy.example.com",
}


@pytest.mark.parametrize("header", sorted(FORWARDING_HEADERS))
async def test_loopback_through_a_proxy_is_refused_without_token(
    client: httpx.AsyncClient, header: str
) -> None:
    # A reverse proxy on the same host connects from loopback; its header gives it away.
    response = await client.get("/admin/stats", headers={header: FORWARDING_HEADERS[header]})
    assert response.status_code == 401
    assert "CHATKEEP_ADMIN_TOKEN" in response.json()["error"]["message"]


async def test_token_is_accepted_through_a_proxy(make_client: ClientFactory) -> None:
    client = await make_client(admin_token="s3cret")
    response = await client.get(
        "/admin/stats",
        headers={"Authorization": "Bearer s3cret", "X-Forwarded-For": "203.0.113.7"},
    )
    assert response.status_code == 200


async def test_token_required_when_configured(make_client: ClientFactory) -> None:
    client = await make_client(admin_token="s3cret")
    assert (await client.get("/admin/stats")).status_code == 401
    wrong = await client.get("/admin/stats", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    basic = await client.get("/admin/stats", headers={"Authorization": "Basic s3cret"})
    assert basic.status_code == 401
    right = await client.get("/admin/stats", headers={"Authorization": "Bearer s3cret"})
    assert right.status_code == 200


async def test_profile_names_lines_and_reports_cost(client: httpx.AsyncClient) -> None:
    response = await client.post("/admin/memory/profile", json={"seconds": 0.05, "top": 5})
    assert response.status_code == 200
    body = response.json()
    assert "cost" in body and body["cost"]["tracemalloc_bytes"] >= 0
    assert len(body["top"]) <= 5


async def test_profile_rejects_bad_arguments_and_overlap(client: httpx.AsyncClient) -> None:
    assert (await client.post("/admin/memory/profile", json={"seconds": -1})).status_code == 422
    too_long = await client.post("/admin/memory/profile", json={"seconds": 10_000})
    assert too_long.status_code == 422
    first = asyncio.create_task(client.post("/admin/memory/profile", json={"seconds": 0.5}))
    async with asyncio.timeout(5):  # must not fire: the profile starts at once
        while not (await client.get("/admin/memory")).json()["profiler_busy"]:  # noqa: ASYNC110
            await asyncio.sleep(0)
    second = await client.post("/admin/memory/profile", json={"seconds": 0.05})
    assert second.status_code == 409
    assert (await first).status_code == 200


def test_serve_refuses_open_admin_on_network_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATKEEP_AUTH", "keys")
    result = CliRunner().invoke(cli_app, ["serve", "--host", "0.0.0.0"])
    assert result.exit_code == 2
    assert "CHATKEEP_ADMIN_TOKEN" in result.output


def test_serve_refuses_one_owner_for_everyone_on_network_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CHATKEEP_ADMIN_TOKEN", "t" * 32)
    result = CliRunner().invoke(cli_app, ["serve", "--host", "0.0.0.0"])
    assert result.exit_code == 2
    assert "CHATKEEP_AUTH=keys" in result.output


def test_serve_refuses_a_short_admin_token_on_network_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CHATKEEP_AUTH", "keys")
    monkeypatch.setenv("CHATKEEP_ADMIN_TOKEN", "x")
    result = CliRunner().invoke(cli_app, ["serve", "--host", "0.0.0.0"])
    assert result.exit_code == 2
    assert "shorter than 16" in result.output


@pytest.mark.parametrize(
    ("models", "says"),
    [
        ('{"gpt": {"provider": "openai", "url": "http://h", "balancng": "x"}}', "balancng"),
        ('{"gpt": {"provider": "openai", "url": "ftp://alice:pw@h"}}', "not an http(s) URL"),
    ],
)
def test_serve_says_what_is_wrong_with_a_model_in_one_line_without_secrets(
    monkeypatch: pytest.MonkeyPatch, models: str, says: str
) -> None:
    monkeypatch.setenv("CHATKEEP_MODELS", models)
    monkeypatch.setenv("CHATKEEP_DEFAULT_MODEL", "gpt")
    result = CliRunner().invoke(cli_app, ["serve", "--port", "0"])
    assert result.exit_code == 2
    assert says in result.output
    assert "Traceback" not in result.output and "pw" not in result.output
