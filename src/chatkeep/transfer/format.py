"""The export format, version 1: whole conversations, every stored field, as JSON or YAML.

A document is ``{"format": "chatkeep.export", "version": 1, "exported_at": …,
"conversations": [...]}``; each conversation carries its messages last, so a writer can
stream them (`chatkeep.transfer.export`). ``docs/export-format.md`` describes it and
``docs/export-format.schema.json`` is its JSON Schema; the models here are what an import
checks, strictly (no coercion: ``"1"`` is not a number, unknown fields are refused).

Choices, and why:

* **Times are numbers** (seconds since the epoch, UTC), exactly as stored: an RFC 3339
  string with milliseconds would lose digits, and the round trip must be exact. They must
  fall between 1970 and the end of 9999 (`MAX_TIMESTAMP`) so every surface can format
  them.
* **Ids keep their values.** An id is 1 to 128 of ``A-Z a-z 0-9 _ -``: whatever goes in a URL
  path and in ``Last-Event-ID`` (``{id}:{n}``) without escaping.
* **Not exported:** the owner (an import stores under the importing owner), the reply being
  generated during an export (its user message is exported, the reply is not: an import
  never opens a reply), and a send's fingerprint (derived from the content on import).
* **Checked beyond types** (`check_conversation`): the limits of the importing server
  (`LimitSettings`, as for a create or a send), ``seq`` 1…n in order, ``message_count`` n,
  unique message ids and client message ids, ``reply_to`` naming an earlier message, and
  a ``reason`` exactly on incomplete messages (as the store writes them: a reply that
  stopped always says why; a complete one never has a reason or a reason code).

An import's complaints are worded by `chatkeep.transfer.problems`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import PydanticCustomError

from chatkeep.domain.records import Conversation, Message, Usage
from chatkeep.domain.validation import INT64_MAX, InvalidValue, check_json, check_text
from chatkeep.settings import LimitSettings
from chatkeep.transfer.problems import SHOWN_PROBLEMS, describe_errors, join_problems

FORMAT = "chatkeep.export"
VERSION = 1
#: 9999-12-31T23:59:59Z: the last second an RFC 3339 timestamp (and Python) can write.
MAX_TIMESTAMP = 253_402_300_799.0
ID_PATTERN = r"^[A-Za-z0-9_-]{1,128}$"
#: The code of an incomplete reply's cause, as chatkeep's errors name them.
REASON_CODE_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"
MAX_MODEL_CHARS = 200


class ConversationRejected(ValueError):
    """A conversation of a document that cannot be imported; the message says why."""


def _valid_text(value: str) -> str:
    try:
        check_text(value)
    except InvalidValue as exc:
        raise PydanticCustomError("invalid_text", "{reason}", {"reason": str(exc)}) from None
    return value


def _storable_json(value: dict[str, Any]) -> dict[str, Any]:
    # The ceiling keeps any value serialisable; the configured depth is checked with the
    # other limits, in `check_conversation`.
    try:
        check_json(value)
    except InvalidValue as exc:
        raise PydanticCustomError("invalid_json", "{reason}", {"reason": str(exc)}) from None
    return value


Text = Annotated[str, AfterValidator(_valid_text)]
# Length bounds go on the string itself, before the text check: put on `Text` they would
# be checked as a generic sequence's ("Value should have at most 200 items").
NonEmptyText = Annotated[str, Field(min_length=1), AfterValidator(_valid_text)]
ModelName = Annotated[
    str, Field(min_length=1, max_length=MAX_MODEL_CHARS), AfterValidator(_valid_text)
]
Id = Annotated[str, Field(pattern=ID_PATTERN)]
Timestamp = Annotated[float, Field(ge=0, le=MAX_TIMESTAMP, allow_inf_nan=False)]
Count = Annotated[int, Field(ge=0, le=INT64_MAX)]


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class UsageEntry(_Strict):
    """Token counts."""

    prompt_tokens: Count
    completion_tokens: Count


class MessageEntry(_Strict):
    """One message, as stored."""

    id: Id
    seq: Annotated[int, Field(ge=1, le=INT64_MAX)]
    role: Literal["system", "user", "assistant"]
    content: Text
    status: Literal["complete", "incomplete"]
    created_at: Timestamp
    client_message_id: NonEmptyText | None = None
    reply_to: Id | None = None
    reason: Text | None = None
    reason_code: Annotated[str, Field(pattern=REASON_CODE_PATTERN)] | None = None
    usage: UsageEntry | None = None


class ConversationEntry(_Strict):
    """One conversation, as stored, with its messages in ``seq`` order."""

    id: Id
    title: Text | None = None
    model: ModelName
    system_prompt: Text | None = None
    metadata: Annotated[dict[str, Any], AfterValidator(_storable_json)] = Field(
        default_factory=dict
    )
    status: Literal["active", "archived"]
    created_at: Timestamp
    updated_at: Timestamp
    last_activity: Timestamp
    message_count: Count | None = None
    usage: UsageEntry = UsageEntry(prompt_tokens=0, completion_tokens=0)
    summary: Text | None = None
    summary_through_seq: Count = 0
    messages: list[MessageEntry]


class DocumentHead(_Strict):
    """What a document says about itself; its conversations are read one at a time."""

    format: str
    version: int
    exported_at: Timestamp
    conversations: list[Any]


class ExportDocument(_Strict):
    """A whole document (for its schema in the API docs; imports read it piecewise)."""

    format: Literal["chatkeep.export"]
    version: Literal[1]
    exported_at: Timestamp
    conversations: list[ConversationEntry]


# -- records → entries (export) -------------------------------------------------------


def usage_entry(usage: Usage) -> dict[str, int]:
    return {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens}


def conversation_entry(conversation: Conversation) -> dict[str, Any]:
    """A conversation's fields in document order, without its messages (they come last)."""
    return {
        "id": conversation.id,
        "title": conversation.title,
        "model": conversation.model,
        "system_prompt": conversation.system_prompt,
        "metadata": conversation.metadata,
        "status": conversation.status,
        "created_at": conversation.created_at,
        "updated_at": conversation.updated_at,
        "last_activity": conversation.last_activity,
        "message_count": conversation.message_count,
        "usage": usage_entry(conversation.usage),
        "summary": conversation.summary,
        "summary_through_seq": conversation.summary_through_seq,
    }


def message_entry(message: Message) -> dict[str, Any]:
    """A message's fields in document order (its conversation is the enclosing one)."""
    return {
        "id": message.id,
        "seq": message.seq,
        "role": message.role,
        "content": message.content,
        "status": message.status,
        "created_at": message.created_at,
        "client_message_id": message.client_message_id,
        "reply_to": message.reply_to,
        "reason": message.reason,
        "reason_code": message.reason_code,
        "usage": usage_entry(message.usage) if message.usage is not None else None,
    }


# -- entries → records (import) -------------------------------------------------------


def read_conversation(raw: Any, limits: LimitSettings) -> ConversationEntry:
    """Validate one conversation of a document, or raise `ConversationRejected`."""
    try:
        entry = ConversationEntry.model_validate(raw)
    except ValidationError as exc:
        raise ConversationRejected(describe_errors(exc)) from None
    problems = check_conversation(entry, limits)
    if problems:
        raise ConversationRejected(join_problems(problems))
    return entry


def check_conversation(entry: ConversationEntry, limits: LimitSettings) -> list[str]:
    """What in ``entry`` breaks the server's limits or the conversation's invariants."""
    problems: list[str] = []
    _check_length(problems, "title", entry.title, limits.max_title_chars)
    _check_length(problems, "system_prompt", entry.system_prompt, limits.max_message_chars)
    _check_length(problems, "summary", entry.summary, limits.max_message_chars)
    try:
        check_json(entry.metadata, max_depth=limits.max_metadata_depth)
    except InvalidValue as exc:
        problems.append(f"metadata: {exc}")
    else:
        if len(orjson.dumps(entry.metadata)) > limits.max_metadata_bytes:
            problems.append(f"metadata: over the limit of {limits.max_metadata_bytes} bytes")
    count = len(entry.messages)
    if entry.message_count is not None and entry.message_count != count:
        problems.append(f"message_count: is {entry.message_count} but {count} messages follow")
    if entry.summary_through_seq > count:
        problems.append(f"summary_through_seq: {entry.summary_through_seq} is past the last seq")
    ids: set[str] = set()
    client_ids: set[str] = set()
    for index, message in enumerate(entry.messages):
        where = f"messages.{index}"
        if message.seq != index + 1:
            problems.append(f"{where}.seq: is {message.seq}; messages are numbered 1, 2, 3…")
        _check_length(problems, f"{where}.content", message.content, limits.max_message_chars)
        _check_length(problems, f"{where}.reason", message.reason, limits.max_message_chars)
        _check_length(
            problems,
            f"{where}.client_message_id",
            message.client_message_id,
            limits.idempotency_key_chars,
        )
        _check_reason(problems, where, message)
        if message.id in ids:
            problems.append(f"{where}.id: {message.id} appears twice")
        if message.reply_to is not None and message.reply_to not in ids:
            problems.append(f"{where}.reply_to: {message.reply_to} is no earlier message")
        ids.add(message.id)
        if message.client_message_id is not None:
            if message.client_message_id in client_ids:
                problems.append(f"{where}.client_message_id: used by an earlier message")
            client_ids.add(message.client_message_id)
        if len(problems) > SHOWN_PROBLEMS:
            break  # a broken conversation is not worth walking to its end
    return problems


def to_records(entry: ConversationEntry, owner_id: str) -> tuple[Conversation, list[Message]]:
    """The records a checked ``entry`` stores for ``owner_id``."""
    conversation = Conversation(
        id=entry.id,
        owner_id=owner_id,
        title=entry.title,
        model=entry.model,
        system_prompt=entry.system_prompt,
        metadata=entry.metadata,
        status=entry.status,
        created_at=entry.created_at,
        updated_at=entry.updated_at,
        last_activity=entry.last_activity,
        message_count=len(entry.messages),
        usage=_usage(entry.usage),
        summary=entry.summary,
        summary_through_seq=entry.summary_through_seq,
    )
    messages = [
        Message(
            id=m.id,
            conversation_id=entry.id,
            seq=m.seq,
            role=m.role,
            content=m.content,
            status=m.status,
            created_at=m.created_at,
            client_message_id=m.client_message_id,
            reply_to=m.reply_to,
            reason=m.reason,
            reason_code=m.reason_code,
            usage=_usage(m.usage) if m.usage is not None else None,
        )
        for m in entry.messages
    ]
    return conversation, messages


def _usage(entry: UsageEntry) -> Usage:
    return Usage(entry.prompt_tokens, entry.completion_tokens)


def _check_length(problems: list[str], name: str, value: str | None, limit: int) -> None:
    if value is not None and len(value) > limit:
        problems.append(f"{name}: {len(value)} characters; the limit is {limit}")


def _check_reason(problems: list[str], where: str, message: MessageEntry) -> None:
    """A reason exactly on an incomplete message, as the store writes them."""
    if message.status == "incomplete":
        if message.reason is None:
            problems.append(f"{where}.reason: required on an incomplete message: why it stopped")
        return
    if message.reason is not None:
        problems.append(f"{where}.reason: only an incomplete message has one")
    if message.reason_code is not None:
        problems.append(f"{where}.reason_code: only an incomplete message has one")
