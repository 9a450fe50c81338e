"""Request bodies of the conversation API, validated by pydantic (bad input → 422).

Every string must be valid Unicode and every JSON value storable as sent (see
`chatkeep.domain.validation`): the checks live in these types, so any route or service
that takes the models gets them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError

from chatkeep.domain.validation import InvalidValue, check_json, check_text


def _valid_text(value: str) -> str:
    try:
        check_text(value)
    except InvalidValue as exc:
        # A custom error, so the answer reads "title: not valid Unicode…", not "Value error, …".
        raise PydanticCustomError("invalid_text", "{reason}", {"reason": str(exc)}) from None
    return value


def _storable_json(value: dict[str, Any]) -> dict[str, Any]:
    # The depth ceiling here keeps any value serialisable; the configured, lower limit
    # (`max_metadata_depth`) is applied by the route, which knows the settings.
    try:
        check_json(value)
    except InvalidValue as exc:
        raise PydanticCustomError("invalid_json", "{reason}", {"reason": str(exc)}) from None
    return value


#: A string that is valid Unicode (no lone surrogates), so it can be stored and sent back.
Text = Annotated[str, AfterValidator(_valid_text)]

#: A JSON object that comes back exactly as sent: Unicode strings and keys, integers in
#: 64 bits, finite numbers, bounded depth.
JsonObject = Annotated[dict[str, Any], AfterValidator(_storable_json)]


class CreateConversation(BaseModel):
    """``POST /api/conversations``."""

    model_config = ConfigDict(extra="forbid")

    title: Text | None = Field(default=None, description="Shown in listings.")
    model: Text | None = Field(default=None, description="A configured model; default if unset.")
    system_prompt: Text | None = Field(default=None, description="Sent first in every context.")
    metadata: JsonObject | None = Field(
        default=None,
        description="Free-form JSON object: integers in 64 bits (signed), nesting bounded "
        "by `max_metadata_depth`.",
    )


class UpdateConversation(BaseModel):
    """``PATCH /api/conversations/{id}``: only the fields given change."""

    model_config = ConfigDict(extra="forbid")

    title: Text | None = None
    status: Literal["active", "archived"] | None = None
    metadata: JsonObject | None = None


class SendMessage(BaseModel):
    """``POST /api/conversations/{id}/messages``."""

    model_config = ConfigDict(extra="forbid")

    content: Text = Field(min_length=1, description="The user's message.")
    client_message_id: Text | None = Field(
        default=None,
        min_length=1,
        description="Makes the send idempotent: a retry with the same id returns the first result.",
    )
    stream: bool = Field(default=False, description="Answer with server-sent events.")
    priority: int = Field(default=0, ge=0, le=9, description="Lower runs first when queued.")


# Answers, as documented in ``/openapi.json``. Routes return plain dicts (built by
# `chatkeep.serialize`) and name these models in ``responses=``: the document is typed
# without a second validation of every answer on the way out.


class ErrorDetail(BaseModel):
    """What went wrong: a stable code and a sentence for people."""

    code: str = Field(description="Stable, machine-readable: `not_found`, `invalid_request`, …")
    message: str


class ErrorAnswer(BaseModel):
    """Every error answer: ``{"error": {"code", "message"}}``."""

    model_config = ConfigDict(extra="allow")

    error: ErrorDetail


class UsageAnswer(BaseModel):
    """Tokens of one reply, or of a whole conversation."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class MessageAnswer(BaseModel):
    """A stored message."""

    id: str
    conversation_id: str
    seq: int
    role: Literal["system", "user", "assistant"]
    content: str
    status: Literal["complete", "incomplete"]
    created_at: str = Field(description="RFC 3339, UTC.")
    client_message_id: str | None = None
    reply_to: str | None = Field(default=None, description="The user message answered.")
    reason: str | None = Field(default=None, description="Why an incomplete reply stopped.")
    usage: UsageAnswer | None = None


class ConversationAnswer(BaseModel):
    """A conversation with its counts and usage."""

    id: str
    title: str | None
    model: str
    system_prompt: str | None
    metadata: dict[str, Any]
    status: Literal["active", "archived"]
    created_at: str = Field(description="RFC 3339, UTC.")
    updated_at: str = Field(description="RFC 3339, UTC.")
    last_activity: str = Field(description="RFC 3339, UTC.")
    message_count: int
    usage: UsageAnswer
    generating: bool = Field(description="A reply is being generated right now.")


class CancelAnswer(BaseModel):
    """What a cancelled reply had said, as stored (``incomplete``)."""

    assistant_message: MessageAnswer | None = None


class HealthAnswer(BaseModel):
    """``GET /healthz``."""

    status: Literal["ok"]


class ReadyAnswer(BaseModel):
    """``GET /readyz`` while ready: each check and ``ok``."""

    status: Literal["ready"]
    checks: dict[str, str]


class ModelAnswer(BaseModel):
    """One model of ``GET /v1/models``, as OpenAI lists it."""

    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(BaseModel):
    """``GET /v1/models``."""

    object: Literal["list"]
    data: list[ModelAnswer]


class ConversationPage(BaseModel):
    """A page of conversations, newest first."""

    items: list[ConversationAnswer]
    next_cursor: str | None = Field(description="Pass back as `cursor` for the next page.")


class MessagePage(BaseModel):
    """A page of history, oldest first."""

    items: list[MessageAnswer]
    next_cursor: str | None = Field(
        description="Pass back as `after` for the next page (as `before`, paging backwards)."
    )


#: One server-sent event of a ``text/event-stream`` answer (comments, such as pings, aside).
SSE_EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "event": {"type": "string", "description": "`message`, `delta`, `done`, `error`…"},
        "data": {"type": "string", "description": "JSON, or `[DONE]` at the end of /v1."},
        "id": {"type": "string", "description": "Send back as `Last-Event-ID` to resume."},
        "retry": {"type": "integer", "minimum": 0},
    },
    "required": ["data"],
}

#: ``content`` of a documented answer that streams server-sent events.
EVENT_STREAM: dict[str, Any] = {"text/event-stream": {"schema": SSE_EVENT_SCHEMA}}

_ERRORS = {
    401: "Missing or wrong credentials.",
    403: "The credential may not do this.",
    404: "No such conversation (for this owner).",
    409: "A reply is still being generated.",
    413: "The body is over the limit.",
    422: "The request is invalid; the message says what and where.",
    503: "Overloaded (with Retry-After), or storage unavailable.",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entries for the error answers a route can give, in their real shape."""
    return {status: {"model": ErrorAnswer, "description": _ERRORS[status]} for status in statuses}


def _on_conversation(
    path: str, method: str, description: str, id_at: str = "/id"
) -> dict[str, Any]:
    """An OpenAPI link from an answer naming a conversation (at ``id_at``) to an operation on it."""
    pointer = "~1api~1conversations~1{conversation_id}" + path.replace("/", "~1")
    return {
        "operationRef": f"#/paths/{pointer}/{method}",
        "parameters": {"conversation_id": f"$response.body#{id_at}"},
        "description": description,
    }


#: Where a created (or read, or changed) conversation leads: clients and generated tests
#: (schemathesis' stateful phase) chain create → send → read with these.
CONVERSATION_LINKS: dict[str, dict[str, Any]] = {
    "GetConversation": _on_conversation("", "get", "Read it back."),
    "UpdateConversation": _on_conversation("", "patch", "Rename, archive or re-tag it."),
    "DeleteConversation": _on_conversation("", "delete", "Delete it."),
    "SendMessage": _on_conversation("/messages", "post", "Send a message to it."),
    "ListMessages": _on_conversation("/messages", "get", "Read its history."),
    "ResumeStream": _on_conversation("/stream", "get", "Resume its reply stream."),
}

_SENT_TO = "/user_message/conversation_id"

#: Where a sent message leads: its conversation, its history, the next message.
SENT_MESSAGE_LINKS: dict[str, dict[str, Any]] = {
    "ListMessages": _on_conversation("/messages", "get", "Read the history.", _SENT_TO),
    "GetConversation": _on_conversation("", "get", "Read counts and usage.", _SENT_TO),
    "SendMessage": _on_conversation("/messages", "post", "Send the next message.", _SENT_TO),
    "ResumeStream": _on_conversation("/stream", "get", "Replay the reply.", _SENT_TO),
}
