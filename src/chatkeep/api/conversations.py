"""Routes of the conversation API under ``/api/conversations``."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.status import HTTP_201_CREATED, HTTP_204_NO_CONTENT

from chatkeep.api.errors import chatkeep_error_response, describe_validation_errors
from chatkeep.api.openapi import SEND_RESPONSES, send_message_parameters
from chatkeep.api.schemas import (
    CONVERSATION_LINKS,
    EVENT_STREAM,
    ConversationAnswer,
    ConversationPage,
    CreateConversation,
    MessagePage,
    SendMessage,
    UpdateConversation,
    error_responses,
)
from chatkeep.api.sse import replayed_events, sse_response, stream_events
from chatkeep.api.state import AppState, state
from chatkeep.domain.records import Message
from chatkeep.domain.validation import INT64_MAX, InvalidValue, check_json
from chatkeep.errors import ChatkeepError, InvalidRequest, NotFound, ProviderError, ReplyInProgress
from chatkeep.serialize import conversation_dict, message_dict
from chatkeep.service.replies import SendResult, error_payload
from chatkeep.storage.base import UNSET

router = APIRouter(prefix="/api/conversations", tags=["conversations"])


def _owner(request: Request) -> str:
    # Every request acts for one owner; API keys mapped to owners plug in here.
    owner: str = request.scope.get("chatkeep.owner", state(request).settings.default_owner)
    return owner


def _check_text(app: AppState, name: str, value: str | None, limit: int) -> None:
    if value is not None and len(value) > limit:
        raise InvalidRequest(f"{name} is {len(value)} characters; the limit is {limit}")


def _check_metadata(app: AppState, metadata: dict[str, Any] | None) -> None:
    if metadata is None:
        return
    try:
        check_json(metadata, max_depth=app.settings.max_metadata_depth)
    except InvalidValue as exc:
        raise InvalidRequest(f"metadata: {exc}") from None
    if len(orjson.dumps(metadata)) > app.settings.max_metadata_bytes:
        raise InvalidRequest(
            f"metadata is over the limit of {app.settings.max_metadata_bytes} bytes as JSON"
        )


def _page_size(app: AppState, limit: int | None) -> int:
    return min(limit or app.settings.default_page_size, app.settings.max_page_size)


@router.post(
    "",
    status_code=HTTP_201_CREATED,
    summary="Create a conversation",
    response_model=None,
    responses={
        201: {"model": ConversationAnswer, "links": CONVERSATION_LINKS},
        **error_responses(413, 422, 503),
    },
)
async def create_conversation(body: CreateConversation, request: Request) -> dict[str, Any]:
    app = state(request)
    model = body.model or app.settings.default_model
    app.providers.get(model)  # unknown model → 422 now, not at the first send
    _check_text(app, "title", body.title, app.settings.max_title_chars)
    _check_text(app, "system_prompt", body.system_prompt, app.settings.max_message_chars)
    _check_metadata(app, body.metadata)
    conversation = await app.store.create_conversation(
        _owner(request),
        model=model,
        title=body.title,
        system_prompt=body.system_prompt,
        metadata=body.metadata,
    )
    return conversation_dict(conversation)


@router.get(
    "",
    summary="List conversations, newest first",
    response_model=None,
    responses={200: {"model": ConversationPage}, **error_responses(422, 503)},
)
async def list_conversations(
    request: Request,
    status: Literal["active", "archived"] | None = None,
    limit: Annotated[int | None, Query(ge=1, le=INT64_MAX)] = None,
    cursor: str | None = None,
) -> dict[str, Any]:
    app = state(request)
    page = await app.store.list_conversations(
        _owner(request), status=status, limit=_page_size(app, limit), cursor=cursor
    )
    return {"items": [conversation_dict(c) for c in page.items], "next_cursor": page.next_cursor}


@router.get(
    "/{conversation_id}",
    summary="Get a conversation with its counts and usage",
    response_model=None,
    responses={
        200: {"model": ConversationAnswer, "links": CONVERSATION_LINKS},
        **error_responses(404, 422, 503),
    },
)
async def get_conversation(conversation_id: str, request: Request) -> dict[str, Any]:
    conversation = await state(request).store.get_conversation(_owner(request), conversation_id)
    return conversation_dict(conversation)


@router.patch(
    "/{conversation_id}",
    summary="Rename, archive or re-tag a conversation",
    response_model=None,
    responses={
        200: {"model": ConversationAnswer, "links": CONVERSATION_LINKS},
        **error_responses(404, 413, 422, 503),
    },
)
async def update_conversation(
    conversation_id: str, body: UpdateConversation, request: Request
) -> dict[str, Any]:
    app = state(request)
    given = body.model_fields_set
    if "status" in given and body.status is None:
        raise InvalidRequest("status: must be 'active' or 'archived'")
    _check_text(app, "title", body.title, app.settings.max_title_chars)
    _check_metadata(app, body.metadata)
    conversation = await app.store.update_conversation(
        _owner(request),
        conversation_id,
        title=body.title if "title" in given else UNSET,
        status=body.status if body.status is not None else UNSET,
        metadata=(body.metadata or {}) if "metadata" in given else UNSET,
    )
    app.service.working_set.invalidate(conversation_id)
    return conversation_dict(conversation)


@router.delete(
    "/{conversation_id}",
    status_code=HTTP_204_NO_CONTENT,
    summary="Delete a conversation",
    response_model=None,
    responses={204: {"description": "Deleted."}, **error_responses(404, 409, 422, 503)},
)
async def delete_conversation(conversation_id: str, request: Request) -> Response:
    app = state(request)
    owner = _owner(request)
    conversation = await app.store.get_conversation(owner, conversation_id)
    if conversation.open_reply_to is not None:
        raise ReplyInProgress("a reply is still being generated; delete it once it is done")
    await app.store.delete_conversation(owner, conversation_id)
    app.streams.discard(conversation_id)
    app.service.working_set.invalidate(conversation_id)
    return Response(status_code=HTTP_204_NO_CONTENT)


@router.get(
    "/{conversation_id}/messages",
    summary="Read history, a page at a time",
    response_model=None,
    responses={200: {"model": MessagePage}, **error_responses(404, 422, 503)},
)
async def list_messages(
    conversation_id: str,
    request: Request,
    limit: Annotated[int | None, Query(ge=1, le=INT64_MAX)] = None,
    after: Annotated[int | None, Query(ge=0, le=INT64_MAX)] = None,
    before: Annotated[int | None, Query(ge=1, le=INT64_MAX)] = None,
) -> dict[str, Any]:
    app = state(request)
    page = await app.store.list_messages(
        _owner(request),
        conversation_id,
        limit=_page_size(app, limit),
        after=after,
        before=before,
    )
    return {"items": [message_dict(m) for m in page.items], "next_cursor": page.next_cursor}


@router.post(
    "/{conversation_id}/messages",
    summary="Send a message; the reply comes as JSON or as server-sent events",
    # Served by the hot-route dispatcher, which calls this endpoint with the bare request;
    # the dependency only declares its parameters for the OpenAPI document.
    dependencies=[Depends(send_message_parameters)],
    responses=SEND_RESPONSES,
)
async def send_message(request: Request) -> Response:
    """Send a message; the body is validated by `SendMessage`, as FastAPI would."""
    try:
        body = SendMessage.model_validate_json(await request.body())
    except ValidationError as exc:
        raise InvalidRequest(describe_validation_errors(exc.errors())) from None
    headers = request.headers
    return await send(
        request,
        request.path_params["conversation_id"],
        body,
        headers.get("idempotency-key"),
        headers.get("accept"),
    )


async def send(
    request: Request,
    conversation_id: str,
    body: SendMessage,
    idempotency_key: str | None,
    accept: str | None,
) -> Response:
    """Send a message: check it, start (or find) its reply, answer as JSON or SSE."""
    app = state(request)
    client_message_id = body.client_message_id or idempotency_key
    if body.client_message_id and idempotency_key and body.client_message_id != idempotency_key:
        raise InvalidRequest("client_message_id and the Idempotency-Key header differ")
    _check_text(app, "content", body.content, app.settings.max_message_chars)
    _check_text(app, "client_message_id", client_message_id, app.settings.idempotency_key_chars)
    streamed = body.stream or "text/event-stream" in (accept or "")
    if streamed:
        app.memory.governor.ensure_stream_allowed()
    result = await app.service.send(
        _owner(request),
        conversation_id,
        content=body.content,
        client_message_id=client_message_id,
        priority=body.priority,
    )
    if streamed:
        return _stream_answer(app, result)
    return await _json_answer(result)


def _stream_answer(app: AppState, result: SendResult) -> Response:
    start = result.start
    if result.stream is not None:
        events = stream_events(
            result.stream,
            after=-1,
            max_lag_bytes=app.settings.subscriber_queue_bytes,
            max_subscribers=app.settings.max_subscribers_per_stream,
        )
        return sse_response(events, app.settings)
    assistant = start.assistant_message
    if assistant is None:
        raise ReplyInProgress("the first send with this id is still being answered; retry soon")
    return sse_response(
        replayed_events(start.user_message.id, _committed_events(start.user_message, assistant)),
        app.settings,
    )


def _committed_events(user_message: Message, assistant: Message) -> list[tuple[str, bytes]]:
    final = message_dict(assistant)
    events = [("message", orjson.dumps(message_dict(user_message)))]
    if assistant.content:
        events.append(("delta", orjson.dumps({"text": assistant.content})))
    if assistant.status == "complete":
        events.append(("done", orjson.dumps(final)))
    else:
        reason = assistant.reason or "the reply did not finish"
        events.append(
            (
                "error",
                orjson.dumps(
                    {"error": {"code": "incomplete", "message": reason}, "message": final}
                ),
            )
        )
    return events


async def _json_answer(result: SendResult) -> Response:
    start = result.start
    assistant = start.assistant_message
    if assistant is None:
        if result.stream is None:
            raise ReplyInProgress("the first send with this id is still being answered; retry soon")
        stream = result.stream
        outcome = await stream.wait_finished()
        if isinstance(outcome, ChatkeepError):
            return chatkeep_error_response(outcome, user_message=message_dict(start.user_message))
        assistant = outcome
        if isinstance(stream.error, ChatkeepError) and assistant.status != "complete":
            body = {
                **error_payload(stream.error),
                "user_message": message_dict(start.user_message),
                "assistant_message": message_dict(assistant),
            }
            return JSONResponse(body, stream.error.status_code)
    assert isinstance(assistant, Message)
    body = {
        "user_message": message_dict(start.user_message),
        "assistant_message": message_dict(assistant),
    }
    if assistant.status == "complete":
        return JSONResponse(body)
    # A replayed send whose reply had failed: the stored reason is all that is left.
    reason = assistant.reason or "the reply did not finish"
    return JSONResponse({**error_payload(ProviderError(reason)), **body}, 502)


@router.get(
    "/{conversation_id}/stream",
    summary="Resume the current or last reply stream (send Last-Event-ID)",
    response_model=None,
    responses={
        200: {
            "description": "The reply's events: `message`, `delta`, then `done` or `error`.",
            "content": EVENT_STREAM,
        },
        **error_responses(404, 422, 503),
    },
)
async def resume_stream(
    conversation_id: str,
    request: Request,
    last_event_id: Annotated[str | None, Header()] = None,
) -> Response:
    app = state(request)
    app.memory.governor.ensure_stream_allowed()
    owner = _owner(request)
    stream = app.streams.get(owner, conversation_id)
    if stream is not None:
        after = stream.position_of(last_event_id)
        events = stream_events(
            stream,
            after=after,
            max_lag_bytes=app.settings.subscriber_queue_bytes,
            max_subscribers=app.settings.max_subscribers_per_stream,
        )
        return sse_response(events, app.settings)
    recent = await app.store.recent_messages(owner, conversation_id, limit=2)
    assistant = next((m for m in recent if m.role == "assistant"), None)
    user = next(
        (m for m in recent if m.role == "user" and assistant and m.id == assistant.reply_to), None
    )
    if assistant is None or user is None:
        raise NotFound(f"conversation {conversation_id} has no reply to stream")
    committed = _committed_events(user, assistant)
    first = 0
    if last_event_id and last_event_id.startswith(f"{user.id}:"):
        # The client saw this reply's text; the stream is gone, so it gets the end.
        first = len(committed) - 1
    return sse_response(replayed_events(user.id, committed[first:], first), app.settings)
