"""What ``/openapi.json`` says about the hot routes, whose endpoints parse their own requests.

The two hot routes (``POST /v1/chat/completions`` and the send route) are registered on
FastAPI like any route, but their endpoints take the bare `Request`: they are called by
`chatkeep.api.middleware.hot_routes.HotRoutes`, without FastAPI's dependency solving. So
their parameters are declared here, as FastAPI dependencies (``dependencies=[...]`` of the
route), and their answers as pydantic models (``responses=...``).

Why a dependency and not a hand-written ``openapi_extra``: FastAPI then derives the
document from the very models the endpoints validate with (`SendMessage`), puts them in
``components`` and keeps them in step; a dict written by hand would drift. The
dependency never runs, because `HotRoutes` answers these routes before FastAPI's router;
were FastAPI ever to serve them, it would only validate what the endpoint checks again.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Header
from pydantic import BaseModel, ConfigDict, Field

from chatkeep.api.schemas import (
    EVENT_STREAM,
    SENT_MESSAGE_LINKS,
    ErrorAnswer,
    MessageAnswer,
    SendMessage,
    UsageAnswer,
)


class SentMessage(BaseModel):
    """The JSON answer to a send: both messages, as committed."""

    user_message: MessageAnswer
    assistant_message: MessageAnswer


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorAnswer, "description": description}


SEND_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "model": SentMessage,
        "description": "The reply, as JSON; or as server-sent events (`message`, `delta`, "
        "then `done` or `error`) with `stream: true` or `Accept: text/event-stream`.",
        "content": EVENT_STREAM,
        "links": SENT_MESSAGE_LINKS,
    },
    404: _error("No such conversation (for this owner)."),
    409: _error("A reply is still being generated, or the idempotency key was reused."),
    413: _error("The body is over the limit."),
    422: _error("The body is invalid."),
    499: _error("The reply was cancelled (`POST …/cancel`); what it said so far is stored."),
    502: _error("The model backend failed; the messages are stored, the reply incomplete."),
    503: _error("Overloaded (with Retry-After), or storage unavailable."),
    504: _error("The model backend did not answer in time."),
}


def send_message_parameters(
    conversation_id: str,
    body: SendMessage,
    idempotency_key: Annotated[
        str | None, Header(description="Makes the send idempotent, like `client_message_id`.")
    ] = None,
) -> None:
    """Declares the send route's parameters (see the module docstring).

    ``Accept`` is not one: OpenAPI ignores a header parameter of that name; choosing the
    answer by ``Accept: text/event-stream`` is said by the ``200`` answer's media types.
    """


class ChatMessageIn(BaseModel):
    """One message of an OpenAI chat request."""

    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[dict[str, Any]] | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """An OpenAI chat completions request; fields not listed are relayed as they are."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(description="A configured model.")
    messages: list[ChatMessageIn] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None


class ChatMessageOut(BaseModel):
    role: Literal["assistant"]
    content: str


class ChatChoice(BaseModel):
    index: int
    message: ChatMessageOut
    finish_reason: str


class ChatCompletion(BaseModel):
    """An OpenAI chat completion (a backend speaking OpenAI may add fields)."""

    model_config = ConfigDict(extra="allow")

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: UsageAnswer


CHAT_COMPLETION_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "model": ChatCompletion,
        "description": "The completion; with `stream: true`, server-sent `chat.completion.chunk` "
        "events ending with `data: [DONE]`.",
        "content": EVENT_STREAM,
    },
    413: _error("The body is over the limit."),
    422: _error("The body is invalid, or the model unknown."),
    502: _error("The model backend failed."),
    503: _error("Overloaded (with Retry-After)."),
    504: _error("The model backend did not answer in time."),
}


def chat_completion_parameters(body: ChatCompletionRequest) -> None:
    """Declares ``POST /v1/chat/completions``'s body (see the module docstring)."""


#: Answers of the auth and quota layers, which run before any route (and so are not in
#: any route's own ``responses``): which path gets which.
_AUTH_ANSWERS = {
    "401": "No credential, or not a valid one (see `WWW-Authenticate`).",
    "403": "A valid credential that may not do this (a user key on an admin route).",
    "429": "Over this key's rate or open replies, or too many failed attempts from this "
    "address (with `Retry-After`).",
}


def document_auth(document: dict[str, Any], public_paths: frozenset[str]) -> dict[str, Any]:
    """``document`` with the credentials every non-public operation takes, and its refusals.

    Two security schemes (a bearer key, or ``x-api-key``), required by every operation
    but the public ones; ``401``, ``403`` and ``429`` added to each of those operations'
    answers, unless the route already says them.
    """
    components = document.setdefault("components", {})
    components.setdefault("securitySchemes", {}).update(
        {
            "bearer": {"type": "http", "scheme": "bearer", "description": "An API key (`ck_…`)"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
        }
    )
    error = {"$ref": "#/components/schemas/ErrorAnswer"}
    for path, operations in document.get("paths", {}).items():
        if path in public_paths:
            continue
        for operation in operations.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            operation.setdefault("security", [{"bearer": []}, {"apiKey": []}])
            for status, description in _AUTH_ANSWERS.items():
                operation["responses"].setdefault(
                    status,
                    {
                        "description": description,
                        "content": {"application/json": {"schema": error}},
                    },
                )
    return document
