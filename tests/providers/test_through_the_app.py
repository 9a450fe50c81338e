"""Providers seen through the app: upstream model names, and what backends report.

Each model here is an alias (``upstream_model`` differs from the name clients use); the
backend records every request, so the tests read the name that went upstream. A backend
is always sent its own name for a model, never chatkeep's.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Literal, Protocol

import httpx
import orjson
import pytest

from chatkeep.app import create_app
from chatkeep.settings import ModelConfig, Settings
from tests.providers.conftest import RawBackend, StartRawBackend

NDJSON = [
    orjson.dumps({"message": {"role": "assistant", "content": "hi"}, "done": False}) + b"\n",
    orjson.dumps({"done": True, "prompt_eval_count": 1, "eval_count": 1}) + b"\n",
]
SSE = [
    b'data: {"choices": [{"index": 0, "delta": {"content": "hi"}}]}\n\n',
    b"data: [DONE]\n\n",
]

Aliased = tuple[httpx.AsyncClient, RawBackend]


class StartAliased(Protocol):
    async def __call__(
        self, kind: Literal["ollama", "openai"], answer: list[bytes] | None = None
    ) -> Aliased: ...


@pytest.fixture
async def aliased(raw_backend: StartRawBackend, tmp_path: Path) -> AsyncIterator[StartAliased]:
    """``await aliased("ollama")``: an app whose model ``alias`` is ``real-name`` upstream,
    on a backend of that kind that records what it is sent."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(
            kind: Literal["ollama", "openai"], answer: list[bytes] | None = None
        ) -> Aliased:
            if kind == "ollama":
                ndjson = answer or NDJSON
                backend = await raw_backend(ndjson, content_type="application/x-ndjson")
            else:
                backend = await raw_backend(answer or SSE, content_type="text/event-stream")
            model = ModelConfig(provider=kind, url=backend.url, upstream_model="real-name")
            settings = Settings(data_dir=tmp_path, models={"alias": model}, default_model="alias")
            app = create_app(settings)
            await stack.enter_async_context(app.router.lifespan_context(app))
            client = await stack.enter_async_context(
                httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ck")
            )
            return client, backend

        yield start


def _upstream_names(backend: RawBackend) -> list[str]:
    return [orjson.loads(body)["model"] for _, body in backend.requests]


CHAT = {"model": "alias", "messages": [{"role": "user", "content": "hello"}]}


@pytest.mark.parametrize("stream", [False, True], ids=["json", "streamed"])
async def test_v1_chat_completions_to_an_ollama_model_sends_its_upstream_name(
    aliased: StartAliased, stream: bool
) -> None:
    client, backend = await aliased("ollama")

    response = await client.post("/v1/chat/completions", json={**CHAT, "stream": stream})

    assert response.status_code == 200
    assert "hi" in response.text
    assert _upstream_names(backend) == ["real-name"]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "streamed"])
async def test_v1_chat_completions_relayed_to_an_openai_model_sends_its_upstream_name(
    aliased: StartAliased, stream: bool
) -> None:
    client, backend = await aliased("openai")

    response = await client.post("/v1/chat/completions", json={**CHAT, "stream": stream})

    assert response.status_code == 200
    assert _upstream_names(backend) == ["real-name"]
    # Only the name changes: everything else goes upstream as the client sent it.
    assert orjson.loads(backend.requests[0][1]) == {**CHAT, "stream": stream, "model": "real-name"}


@pytest.mark.parametrize("kind", ["ollama", "openai"])
async def test_a_durable_send_sends_the_upstream_name(
    aliased: StartAliased, kind: Literal["ollama", "openai"]
) -> None:
    client, backend = await aliased(kind)
    created = await client.post("/api/conversations", json={"model": "alias"})
    cid = created.json()["id"]

    sent = await client.post(f"/api/conversations/{cid}/messages", json={"content": "hello"})

    assert sent.status_code in (200, 201)
    assert _upstream_names(backend) == ["real-name"]


async def test_an_absurd_usage_is_stored_as_chatkeeps_estimate(aliased: StartAliased) -> None:
    # 2**63 is past SQLite's integers: stored as is, it would fail the write.
    done = {"done": True, "prompt_eval_count": 5, "eval_count": 2**63}
    client, _ = await aliased("ollama", [NDJSON[0], orjson.dumps(done) + b"\n"])
    cid = (await client.post("/api/conversations", json={"model": "alias"})).json()["id"]

    sent = await client.post(f"/api/conversations/{cid}/messages", json={"content": "hello"})

    assert sent.status_code == 200
    assistant = sent.json()["assistant_message"]
    assert (assistant["content"], assistant["status"]) == ("hi", "complete")
    usage = assistant["usage"]
    assert 0 < usage["prompt_tokens"] < 100 and 0 < usage["completion_tokens"] < 100
    history = (await client.get(f"/api/conversations/{cid}/messages")).json()["items"]
    assert history[-1]["usage"] == usage
