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
