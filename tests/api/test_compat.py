"""The OpenAI-compatible endpoints, answered by a non-OpenAI model (echo)."""

from __future__ import annotations

import json

import httpx

from tests.api.conftest import ClientFactory


async def test_models_lists_configured_models(client: httpx.AsyncClient) -> None:
    body = (await client.get("/v1/models")).json()
    assert body["object"] == "list"
    assert {m["id"] for m in body["data"]} >= {"echo", "gated"}


async def test_chat_completion_non_streamed(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/chat/completions",
        json={"model": "echo", "messages": [{"role": "user", "content": "ping pong"}]},
    )
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "echo: ping pong"}
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["total_tokens"] == (
        body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
    )


async def test_chat_completion_streamed_with_usage(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/chat/completions",
        json={
            "model": "echo",
            "stream": True,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "a b"}],
        },
    )
    lines = [line[6:] for line in response.text.split("\n\n") if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    chunks = [json.loads(line) for line in lines[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "echo: a b"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)


async def test_chat_completion_bad_requests(client: httpx.AsyncClient) -> None:
    unknown = await client.post(
        "/v1/chat/completions", json={"model": "nope", "messages": [{"role": "user"}]}
    )
    assert unknown.status_code == 422 and unknown.json()["error"]["code"] == "unknown_model"
    not_json = await client.post("/v1/chat/completions", content=b"{")
    assert not_json.status_code == 422
    no_messages = await client.post("/v1/chat/completions", json={"model": "echo"})
    assert no_messages.status_code == 422
    assert "messages" in no_messages.json()["error"]["message"]


async def test_too_many_messages_is_422(make_client: ClientFactory) -> None:
    client = await make_client(max_messages_per_request=3)
    messages = [{"role": "user", "content": "x"}] * 4
    response = await client.post(
        "/v1/chat/completions", json={"model": "echo", "messages": messages}
    )
    assert response.status_code == 422 and "limit is 3" in response.json()["error"]["message"]


async def test_fast_path_keeps_body_limit_metrics_and_errors(make_client: ClientFactory) -> None:
    client = await make_client(max_body_bytes=2048)
    big = {"model": "echo", "messages": [{"role": "user", "content": "x" * 4096}]}
    too_big = await client.post("/v1/chat/completions", json=big)
    assert too_big.status_code == 413 and too_big.json()["error"]["code"] == "payload_too_large"
    ok = await client.post(
        "/v1/chat/completions", json={"model": "echo", "messages": [{"role": "user"}]}
    )
    assert ok.status_code == 200
    failing = await client.post(
        "/v1/chat/completions", json={"model": "failing", "messages": [{"role": "user"}]}
    )
    assert failing.status_code == 502 and failing.json()["error"]["code"] == "provider_unavailable"
    metrics = (await client.get("/metrics")).text
    for status in ("200", "413", "502"):
        assert f'method="POST",route="/v1/chat/completions",status="{status}"' in metrics


async def test_content_parts_reach_the_model_as_their_text(client: httpx.AsyncClient) -> None:
    parts = [
        {"type": "text", "text": "ping "},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        {"type": "text", "text": "pong"},
    ]
    response = await client.post(
        "/v1/chat/completions",
        json={"model": "echo", "messages": [{"role": "user", "content": parts}]},
    )
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "echo: ping pong"
