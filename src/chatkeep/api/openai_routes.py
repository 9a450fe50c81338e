"""The OpenAI-compatible, stateless endpoints: ``/v1/chat/completions`` and ``/v1/models``.

This is the hot path the benchmarks measure, so it is a plain Starlette route:
no pydantic model of the body, no re-encoding when the backend speaks OpenAI
itself (the bytes are relayed as they arrive), and the admission slot is held
exactly as long as the backend is busy.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import APIRouter, Depends
from starlette.requests import Request
from starlette.responses import Response

from chatkeep.api.openapi import CHAT_COMPLETION_RESPONSES, chat_completion_parameters
from chatkeep.api.relay import RelayResponse
from chatkeep.api.schemas import ModelList
from chatkeep.api.state import state
from chatkeep.domain.records import Usage
from chatkeep.domain.tokens import estimate_tokens
from chatkeep.errors import InvalidRequest, ShuttingDown
from chatkeep.providers.base import ChatRequest, Provider
from chatkeep.quotas.key_policy import (
    check_model,
    effective_priority,
    request_key,
    visible_models,
)
from chatkeep.serialize import usage_dict
from chatkeep.service.pipeline import GenerationPipeline, Slot, backend_done

_JSON = "application/json"
_SSE = "text/event-stream"

#: Declares the routes for the app and its OpenAPI document; `/v1/chat/completions` is
#: served by the hot-route dispatcher (`chatkeep.api.middleware.hot_routes`).
router = APIRouter(tags=["openai"])


def _parse(body: bytes) -> dict[str, Any]:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"body is not valid JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise InvalidRequest("body must be a JSON object")
    if not isinstance(payload.get("model"), str):
        raise InvalidRequest("model: a string is required")
    messages = payload.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("messages: a non-empty list is required")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise InvalidRequest(f"messages.{index}: needs a string role")
        if not isinstance(message.get("content"), str | list | None):
            raise InvalidRequest(f"messages.{index}.content: a string or a list of parts")
    if not isinstance(payload.get("stream_options"), dict | None):
        raise InvalidRequest("stream_options: an object is required")
    return payload


@router.post(
    "/v1/chat/completions",
    summary="OpenAI chat completions, relayed (or translated) to the model's backend",
    dependencies=[Depends(chat_completion_parameters)],
    responses=CHAT_COMPLETION_RESPONSES,
)
async def chat_completions(request: Request) -> Response:
    """``POST /v1/chat/completions``: OpenAI's wire format, streamed or not."""
    app = state(request)
    body = await request.body()
    payload = _parse(body)
    limit = app.settings.limits.max_messages_per_request
    if len(payload["messages"]) > limit:
        raise InvalidRequest(f"messages: {len(payload['messages'])} given; the limit is {limit}")
    model = payload["model"]
    key = request_key(request)
    check_model(key, model)
    provider = app.providers.route(model).provider
    streamed = bool(payload.get("stream"))
    # OpenAI's body has no priority (an extra field would be relayed to the backend): a
    # request runs at its key's.
    slot = await app.pipeline.admit(effective_priority(key), request.scope["chatkeep.owner"])
    with app.pipeline.stateless.guard() as stopped:
        try:
            return await _answer(app.pipeline, payload, body, model, provider, streamed, slot)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not stopped() or task is None or task.uncancel() > 0:
                raise
            raise ShuttingDown("the server shut down before the answer was complete") from None


async def _answer(
    pipeline: GenerationPipeline,
    payload: dict[str, Any],
    body: bytes,
    model: str,
    provider: Provider,
    streamed: bool,
    slot: Slot,
) -> Response:
    """Relay or translate one chat completion.

    Once a streamed response exists, it owns ``slot`` and gives it back when it closes.
    """
    owned_by_response = False
    try:
        if provider.supports_passthrough:
            answer = await pipeline.relay(model, body)
            if not streamed:
                chunks = [chunk async for chunk in answer.body]
                backend_done()
                return Response(b"".join(chunks), answer.status, media_type=answer.content_type)
            chunks_iter = answer.body
            status, media_type = answer.status, answer.content_type
        elif streamed:
            chunks_iter = _translated_stream(pipeline, payload, model)
            status, media_type = 200, _SSE
        else:
            return await _translated_answer(pipeline, payload, model)
        owned_by_response = True
        return RelayResponse(
            chunks_iter,
            status_code=status,
            media_type=media_type,
            on_close=slot.aclose,
            stoppable=pipeline.stateless,
        )
    finally:
        if not owned_by_response:
            slot.release()


def _request(payload: dict[str, Any]) -> ChatRequest:
    messages = [
        {"role": str(m["role"]), "content": _text(m.get("content"))} for m in payload["messages"]
    ]
    options: dict[str, Any] = {
        k: payload[k] for k in ("temperature", "max_tokens", "top_p") if k in payload
    }
    return ChatRequest(messages=messages, options=options)


def _text(content: str | list[Any] | None) -> str:
    """A message's text: a string as it is, or the text parts of a list of content parts.

    Models reached through chatkeep's own providers take text; parts of other kinds (an
    image) are left out rather than sent as the text of their JSON.
    """
    if isinstance(content, list):
        texts = (part.get("text") for part in content if isinstance(part, dict))
        return "".join(text for text in texts if isinstance(text, str))
    return content or ""


def _completion_id() -> str:
    return "chatcmpl-" + os.urandom(12).hex()


async def _translated_answer(
    pipeline: GenerationPipeline, payload: dict[str, Any], model: str
) -> Response:
    request = _request(payload)
    parts: list[str] = []
    usage: Usage | None = None
    finish_reason: str | None = None
    async for chunk in pipeline.pieces(model, request.messages, request.options):
        parts.append(chunk.text)
        usage = chunk.usage or usage
        finish_reason = chunk.finish_reason or finish_reason
    text = "".join(parts)
    usage = usage or _estimated_usage(request, text)
    answer = {
        "id": _completion_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": finish_reason or "stop",
            }
        ],
        "usage": usage_dict(usage),
    }
    return Response(orjson.dumps(answer), media_type=_JSON)


async def _translated_stream(
    pipeline: GenerationPipeline, payload: dict[str, Any], model: str
) -> AsyncIterator[bytes]:
    request = _request(payload)
    include_usage = bool((payload.get("stream_options") or {}).get("include_usage"))
    head = {
        "id": _completion_id(),
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
    }

    def event(choices: list[dict[str, Any]], **extra: Any) -> bytes:
        return b"data: " + orjson.dumps({**head, "choices": choices, **extra}) + b"\n\n"

    yield event(
        [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]
    )
    parts: list[str] = []
    usage: Usage | None = None
    finish_reason = "stop"
    try:
        async for chunk in pipeline.pieces(model, request.messages, request.options):
            usage = chunk.usage or usage
            finish_reason = chunk.finish_reason or finish_reason
            if chunk.text:
                parts.append(chunk.text)
                yield event([{"index": 0, "delta": {"content": chunk.text}, "finish_reason": None}])
    except InvalidRequest:
        raise
    except Exception as exc:  # the status line is gone; report in the stream as OpenAI does
        message = getattr(exc, "message", str(exc))
        yield (
            b"data: "
            + orjson.dumps({"error": {"code": "provider_error", "message": message}})
            + b"\n\n"
        )
        return
    yield event([{"index": 0, "delta": {}, "finish_reason": finish_reason}])
    if include_usage:
        usage = usage or _estimated_usage(request, "".join(parts))
        yield event([], usage=usage_dict(usage))
    yield b"data: [DONE]\n\n"


def _estimated_usage(request: ChatRequest, reply: str) -> Usage:
    prompt = sum(estimate_tokens(m["content"]) for m in request.messages)
    return Usage(prompt, estimate_tokens(reply))


@router.get("/v1/models", response_model=None, responses={200: {"model": ModelList}})
async def list_models(request: Request) -> Response:
    """``GET /v1/models``: the configured model names (those the request's key may use)."""
    app = state(request)
    created = int(time.time())
    data = [
        {"id": name, "object": "model", "created": created, "owned_by": "chatkeep"}
        for name in visible_models(request_key(request), app.providers.names())
    ]
    return Response(orjson.dumps({"object": "list", "data": data}), media_type=_JSON)
