"""Routes of the conversation API under ``/api/conversations``."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.status import HTTP_201_CREATED, HTTP_204_NO_CONTENT

from chatkeep.api.errors import describe_validation_errors
from chatkeep.api.openapi import SEND_RESPONSES, send_message_parameters
from chatkeep.api.schemas import (
    CONVERSATION_LINKS,
    EVENT_STREAM,
    CancelAnswer,
    ConversationAnswer,
    ConversationPage,
    CreateConversation,
    MessagePage,
    SendMessage,
    UpdateConversation,
    error_responses,
)
from chatkeep.api.sse import EventStreamResponse, replayed_events, stream_events
from chatkeep.api.state import AppState, state
from chatkeep.domain.outcome import ReplyOutcome
from chatkeep.domain.records import Message
from chatkeep.domain.validation import INT64_MAX
from chatkeep.errors import InvalidRequest, ReplyInProgress
from chatkeep.quotas.key_policy import check_model, default_model, effective_priority, request_key
from chatkeep.quotas.lease import scope_lease
from chatkeep.serialize import conversation_dict, message_dict
from chatkeep.service.replies import SendResult
from chatkeep.storage.base import UNSET
from chatkeep.streaming.hub import ReplySource
from chatkeep.streaming.reply_stream import committed_events

router = APIRouter(prefix="/api/conversations", tags=["conversations"])


def _owner(request: Request) -> str:
    # The auth layer of the middleware stack put the request's owner in its scope.
    owner: str = request.scope["chatkeep.owner"]
    return owner


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
    key = request_key(request)
    model = body.model or default_model(key, app.conversations.default_model)
    check_model(key, model)
    conversation = await app.conversations.create(
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
    page = await state(request).conversations.list(
        _owner(request), status=status, limit=limit, cursor=cursor
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
    conversation = await state(request).conversations.get(_owner(request), conversation_id)
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
    given = body.model_fields_set
    if "status" in given and body.status is None:
        raise InvalidRequest("status: must be 'active' or 'archived'")
    conversation = await state(request).conversations.update(
        _owner(request),
        conversation_id,
        title=body.title if "title" in given else UNSET,
        status=body.status if body.status is not None else UNSET,
        metadata=(body.metadata or {}) if "metadata" in given else UNSET,
    )
    return conversation_dict(conversation)


@router.delete(
    "/{conversation_id}",
    status_code=HTTP_204_NO_CONTENT,
    summary="Delete a conversation",
    response_model=None,
    responses={204: {"description": "Deleted."}, **error_responses(404, 409, 422, 503)},
)
async def delete_conversation(conversation_id: str, request: Request) -> Response:
    await state(request).conversations.delete(_owner(request), conversation_id)
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
    page = await state(request).conversations.history(
        _owner(request), conversation_id, limit=limit, after=after, before=before
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
    if idempotency_key is not None and not idempotency_key.strip():
        raise InvalidRequest("Idempotency-Key: an empty key makes nothing idempotent; omit it")
    if body.client_message_id is not None and not body.client_message_id.strip():
        raise InvalidRequest("client_message_id: a blank id makes nothing idempotent; omit it")
    client_message_id = body.client_message_id or idempotency_key
    if body.client_message_id and idempotency_key and body.client_message_id != idempotency_key:
        raise InvalidRequest("client_message_id and the Idempotency-Key header differ")
    _check_text("content", body.content, app.settings.limits.max_message_chars)
    _check_text("client_message_id", client_message_id, app.settings.limits.idempotency_key_chars)
    streamed = body.stream or "text/event-stream" in (accept or "")
    if streamed:
        app.memory.governor.ensure_stream_allowed()
    owner, key = _owner(request), request_key(request)
    if key is not None and key.limits.models is not None:
        # Through the working set: the reply's context is read from there next.
        entry = await app.conversations.working_set.get(owner, conversation_id)
        check_model(key, entry.conversation.model)
    result = await app.replies.send(
        owner,
        conversation_id,
        content=body.content,
        client_message_id=client_message_id,
        priority=effective_priority(key, body.priority),
        # The key's slot for this call: the reply holds it too, for as long as it runs.
        lease=scope_lease(request.scope),
    )
    if streamed:
        return _stream_answer(app, result)
    return _json_answer(result, await app.replies.outcome(result))


def _check_text(name: str, value: str | None, limit: int) -> None:
    if value is not None and len(value) > limit:
        raise InvalidRequest(f"{name} is {len(value)} characters; the limit is {limit}")


def _events(app: AppState, source: ReplySource, after: int) -> EventStreamResponse:
    events = stream_events(
        source,
        after=after,
        max_lag_bytes=app.settings.streams.subscriber_queue_bytes,
        max_subscribers=app.settings.streams.max_subscribers,
        ping_seconds=app.settings.streams.ping_seconds,
    )
    return EventStreamResponse(events, send_timeout=app.settings.streams.send_timeout_seconds)


def _committed(
    app: AppState, user_message: Message, outcome: ReplyOutcome, first: int = 0
) -> EventStreamResponse:
    events = committed_events(user_message, outcome)[first:]
    return EventStreamResponse(
        replayed_events(user_message.id, events, first),
        send_timeout=app.settings.streams.send_timeout_seconds,
    )


def _stream_answer(app: AppState, result: SendResult) -> EventStreamResponse:
    if result.outcome is not None:
        return _committed(app, result.start.user_message, result.outcome)
    if result.source is None:
        raise ReplyInProgress("the first send with this id is still being answered; retry soon")
    return _events(app, result.source, after=-1)


def _json_answer(result: SendResult, outcome: ReplyOutcome) -> Response:
    """The one JSON answer of a send, live or replayed alike.

    Put together from each message's own JSON: the user message's was made once for the
    reply's first event, and orjson encodes the rest (Starlette's `JSONResponse` would
    run the standard library's encoder over both messages again).
    """
    user = result.user_json or orjson.dumps(message_dict(result.start.user_message))
    parts = [b'{"user_message":', user]
    if not outcome.complete:
        parts[0] = orjson.dumps(outcome.error_body())[:-1] + b',"user_message":'
    if outcome.message is not None:
        parts += [b',"assistant_message":', orjson.dumps(message_dict(outcome.message))]
    parts.append(b"}")
    return Response(b"".join(parts), outcome.status_code, media_type="application/json")


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
    resumption = await app.replies.resume(_owner(request), conversation_id)
    if resumption.source is not None:
        return _events(app, resumption.source, resumption.source.position_of(last_event_id))
    user, outcome = resumption.user_message, resumption.outcome
    assert user is not None and outcome is not None
    first = 0
    if last_event_id and last_event_id.startswith(f"{user.id}:"):
        # The client saw this reply's text; the stream is gone, so it gets the end.
        first = len(committed_events(user, outcome)) - 1
    return _committed(app, user, outcome, first)


@router.post(
    "/{conversation_id}/cancel",
    summary="Stop the reply being generated; what it said so far is stored as incomplete",
    response_model=None,
    responses={200: {"model": CancelAnswer}, **error_responses(404, 409, 422, 503)},
)
async def cancel_reply(conversation_id: str, request: Request) -> Response:
    app = state(request)
    outcome = await app.replies.cancel(_owner(request), conversation_id)
    body = {"assistant_message": message_dict(outcome.message)} if outcome.message else {}
    return JSONResponse(body)
