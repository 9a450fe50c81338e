"""Request bodies of the conversation API, validated by pydantic (bad input → 422)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class CreateConversation(BaseModel):
    """``POST /api/conversations``."""

    model_config = ConfigDict(extra="forbid")

    title: str | None = Field(default=None, description="Shown in listings.")
    model: str | None = Field(default=None, description="A configured model; default if unset.")
    system_prompt: str | None = Field(default=None, description="Sent first in every context.")
    metadata: dict[str, Any] | None = Field(default=None, description="Free-form JSON object.")


class UpdateConversation(BaseModel):
    """``PATCH /api/conversations/{id}``: only the fields given change."""

    model_config = ConfigDict(extra="forbid")

    title: str | None = None
    status: Literal["active", "archived"] | None = None
    metadata: dict[str, Any] | None = None


class SendMessage(BaseModel):
    """``POST /api/conversations/{id}/messages``."""

    model_config = ConfigDict(extra="forbid")

    content: str = Field(min_length=1, description="The user's message.")
    client_message_id: str | None = Field(
        default=None,
        min_length=1,
        description="Makes the send idempotent: a retry with the same id returns the first result.",
    )
    stream: bool = Field(default=False, description="Answer with server-sent events.")
    priority: int = Field(default=0, ge=0, le=9, description="Lower runs first when queued.")
