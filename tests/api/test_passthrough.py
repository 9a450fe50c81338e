"""The OpenAI-compatible endpoint in front of a real OpenAI-speaking backend (the fake one)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from chatkeep.app import create_app
from chatkeep.fakellm import FakeLLMConfig, start_fake_llm
from chatkeep.settings import ModelConfig, Settings


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with await start_fake_llm(FakeLLMConfig(tokens=5, models=("upstream-name",))) as fake:
        settings = Settings(
            data_dir=tmp_path,
            models={
                "echo": ModelConfig(provider="echo"),
                "gpt": ModelConfig(provider="openai", url=fake.url, upstream_model="upstream-name"),
                "same": ModelConfig(provider="openai", url=fake.url),
            },
        )
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://ck") as http:
                yield http


async def test_non_streamed_passthrough_relays_the_backend_answer(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/v1/chat/completions",
        json={"model": "gpt", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["model"] == "upstream-name"  # rewritten to the backend's name
    assert body["choices"][0]["message"]["content"]
    assert body["usage"]["completion_tokens"] == 5


async def test_streamed_passthrough_arrives_whole(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/chat/completions",
        json={
            "model": "gpt",
            "stream": True,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "hi"}],
        },
    )
    assert response.status_code == 200
    assert "content-length" not in response.headers
    lines = [b[6:] for b in response.text.split("\n\n") if b.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    chunks = [json.loads(line) for line in lines[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert len(text.split()) == 5
    assert chunks[-1]["usage"]["completion_tokens"] == 5


async def test_backend_errors_are_relayed_unchanged(tmp_path: Path) -> None:
    async with await start_fake_llm(FakeLLMConfig(fail_rate=1.0)) as fake:
        settings = Settings(
            data_dir=tmp_path,
            models={
                "echo": ModelConfig(provider="echo"),
                "gpt": ModelConfig(provider="openai", url=fake.url),
            },
        )
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://ck") as http:
                response = await http.post(
                    "/v1/chat/completions",
                    json={"model": "gpt", "messages": [{"role": "user", "content": "hi"}]},
                )
                stats = (await http.get("/admin/stats")).json()
    assert response.status_code == 500
    assert stats["generations"]["inflight"] == 0  # the slot came back
