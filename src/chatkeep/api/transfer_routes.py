"""Export and import of conversations over HTTP.

``GET /api/conversations/{conversation_id}/export?format=json|yaml`` streams the export
document of one conversation (`chatkeep.transfer.export`): the conversation is read first,
so another owner's id, or one that does not exist, is a plain ``404`` before any byte of
the document; the messages are then read page by page as the client takes the bytes.

``POST /api/conversations/import`` takes a document (JSON, or YAML with
``Content-Type: application/yaml``) within the body limit and imports it for the caller
(`chatkeep.transfer.importer`): ``200`` with what was created, skipped and rejected, or
``422`` when the document cannot be read at all. Decoding runs off the event loop.

The routes share the ``/api/conversations`` prefix with `conversation_routes` but no
method and path pattern: ``POST …/import`` matches no route there (it has no
``POST /{conversation_id}``), so the order the routers are included in does not matter.
"""

from __future__ import annotations

import asyncio
import copy
import re
import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from chatkeep.api.schemas import error_responses
from chatkeep.api.state import state
from chatkeep.transfer.documents import document_depth, kind_of_media, parse
from chatkeep.transfer.export import MEDIA_TYPES, export_conversation
from chatkeep.transfer.format import ExportDocument
from chatkeep.transfer.importer import import_document

router = APIRouter(prefix="/api/conversations", tags=["export and import"])


def _owner(request: Request) -> str:
    # The auth layer of the middleware stack put the request's owner in its scope.
    owner: str = request.scope["chatkeep.owner"]
    return owner


def _inlined(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with its ``$defs`` written in place: a ``#/$defs/…`` reference would point
    into the OpenAPI document, not into the schema. The format's models do not recurse."""
    definitions = schema.get("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(copy.deepcopy(definitions[ref.removeprefix("#/$defs/")]))
            return {key: resolve(value) for key, value in node.items() if key != "$defs"}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


DOCUMENT_SCHEMA = _inlined(ExportDocument.model_json_schema())
_DOCUMENT_CONTENT = {media: {"schema": DOCUMENT_SCHEMA} for media in MEDIA_TYPES.values()}


class SkippedAnswer(BaseModel):
    """A conversation left as it was: the owner already has one with this id."""

    id: str
    reason: str


class RejectedAnswer(BaseModel):
    """A conversation not imported, and why; ``index`` is its place in the document."""

    id: str | None = Field(description="The id it gave, when it gave a valid one.")
    index: int
    reason: str


class ImportAnswer(BaseModel):
    """What the import did with each conversation of the document."""

    created: list[str]
    skipped: list[SkippedAnswer]
    rejected: list[RejectedAnswer]


@router.get(
    "/{conversation_id}/export",
    summary="Export a conversation with all its messages, as JSON or YAML",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The export document (see docs/export-format.md), as an attachment.",
            "content": _DOCUMENT_CONTENT,
        },
        **error_responses(404, 422, 503),
    },
)
async def export(
    conversation_id: str,
    request: Request,
    kind: Annotated[
        Literal["json", "yaml"], Query(alias="format", description="The document's syntax.")
    ] = "json",
) -> StreamingResponse:
    app = state(request)
    owner = _owner(request)
    # Read before the answer starts: a missing (or another owner's) id is a 404, not a
    # cut stream.
    conversation = await app.conversations.get(owner, conversation_id)
    chunks = export_conversation(app.store, owner, conversation, kind, exported_at=time.time())
    filename = re.sub(r"[^A-Za-z0-9_.-]", "_", conversation.id)
    return StreamingResponse(
        chunks,
        media_type=MEDIA_TYPES[kind],
        headers={"Content-Disposition": f'attachment; filename="{filename}.{kind}"'},
    )


@router.post(
    "/import",
    summary="Import conversations from an export document (JSON or YAML)",
    response_model=None,
    responses={200: {"model": ImportAnswer}, **error_responses(413, 422, 503)},
    openapi_extra={"requestBody": {"required": True, "content": _DOCUMENT_CONTENT}},
)
async def import_conversations(request: Request) -> dict[str, Any]:
    app = state(request)
    limits = app.settings.limits
    body = await request.body()
    kind = kind_of_media(request.headers.get("content-type"))
    document = await asyncio.to_thread(parse, body, kind, max_depth=document_depth(limits))
    report = await import_document(app.store, _owner(request), document, limits)
    return report.as_dict()
