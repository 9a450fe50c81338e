"""API keys over HTTP: the admin's ``/admin/keys`` and each key's own ``/api/keys``.

``/admin/keys`` (the admin token, or a direct loopback client when none is set) sees and
manages every owner's keys, with any limits. ``/api/keys`` acts as the calling key
(``scope["chatkeep.key"]``, put there by the auth layer): it creates keys for that
owner, never with more than the calling key has (`chatkeep.auth.grants`), and the keys
it makes share its family's budget; it lists and revokes only the calling key itself and
the keys made from it, at any depth. Any other key id, of the same owner or not, is
``404`` there, as for every record: a leaked low key cannot see, let alone revoke, the
owner's stronger keys. A revoke takes every key made from the revoked one along.

A secret appears once, in the answer that creates its key; nothing lists it again.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.status import HTTP_201_CREATED

from chatkeep.api.admin import require_admin
from chatkeep.api.middleware.auth import KEY_SCOPE_KEY
from chatkeep.api.schemas import ErrorAnswer, Text, error_responses
from chatkeep.api.state import state
from chatkeep.auth.grants import EVERY_MODEL, MAX_NAME_CHARS, ModelChoice
from chatkeep.auth.key_service import MAX_LABEL_CHARS, IssuedKey, KeyService, key_dict
from chatkeep.domain.keys import ApiKey
from chatkeep.domain.records import Page
from chatkeep.domain.validation import INT64_MAX
from chatkeep.errors import Forbidden

_FORBIDDEN: dict[int | str, dict[str, Any]] = {
    403: {
        "model": ErrorAnswer,
        "description": "The credential may not do this (more than the calling key has, "
        "or no API key at all).",
    }
}


class NewKey(BaseModel):
    """``POST /api/keys``: what is left out is the calling key's own."""

    model_config = ConfigDict(extra="forbid")

    owner: Text | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_NAME_CHARS,
        description="The calling key's owner (the only one allowed); left out: the same.",
    )
    label: Text | None = Field(
        default=None, max_length=MAX_LABEL_CHARS, description="A note to recognise it by."
    )
    rate: float | None = Field(
        default=None, gt=0, allow_inf_nan=False, strict=True, description="Requests a second."
    )
    burst: int | None = Field(
        default=None, ge=1, strict=True, description="Requests at once above the rate."
    )
    max_streams: int | None = Field(
        default=None, ge=1, strict=True, description="Replies open at once."
    )
    priority: int | None = Field(
        default=None, ge=0, le=9, strict=True, description="Admission priority: 0 runs first."
    )
    models: list[Text] | None = Field(
        default=None,
        min_length=1,
        description="Only these models. Left out: the creator's; `null`: every model.",
    )

    def asked(self) -> dict[str, Any]:
        """What `KeyService.create` takes of this body besides the owner."""
        return {
            "label": self.label,
            "rate": self.rate,
            "burst": self.burst,
            "max_streams": self.max_streams,
            "priority": self.priority,
            "models": self.model_choice(),
        }

    def model_choice(self) -> ModelChoice:
        """`grant`'s ``models``: left out, every model (an explicit ``null``), or these."""
        if self.models is None:
            return EVERY_MODEL if "models" in self.model_fields_set else None
        return self.models


class NewAdminKey(NewKey):
    """``POST /admin/keys``: what is left out comes from the settings' key defaults."""

    owner: Text = Field(
        min_length=1, max_length=MAX_NAME_CHARS, description="The owner the key acts for."
    )


class KeyAnswer(BaseModel):
    """An API key: its owner, limits and state. Never its secret."""

    id: str
    owner_id: str
    label: str | None
    rate: float = Field(description="Requests a second.")
    burst: int
    max_streams: int
    priority: int = Field(description="0 runs first.")
    models: list[str] | None = Field(description="`null`: every model.")
    created_at: str = Field(description="RFC 3339, UTC.")
    created_by: str = Field(description="`admin`, or the id of the key that created it.")
    revoked_at: str | None = Field(description="RFC 3339, UTC; `null` while it works.")


class CreatedKeyAnswer(BaseModel):
    """A key just created, and its secret."""

    secret: str = Field(
        description="Send as `Authorization: Bearer <secret>`. Shown only in this answer: "
        "it is stored hashed and cannot be shown again."
    )
    key: KeyAnswer


class KeyPage(BaseModel):
    """A page of keys, newest first."""

    items: list[KeyAnswer]
    next_cursor: str | None = Field(description="Pass back as `cursor` for the next page.")


def key_service(request: Request) -> KeyService:
    """The keys of the server's store, with its defaults, models and key cache."""
    app = state(request)
    settings = app.settings
    return KeyService(
        app.store,
        defaults=settings.access,
        models=settings.models.keys(),
        default_page_size=settings.limits.default_page_size,
        max_page_size=settings.limits.max_page_size,
        cache=app.keys,
    )


def calling_key(request: Request) -> ApiKey:
    """The request's API key; without one (``CHATKEEP_AUTH=none``, the admin token): 403."""
    key: ApiKey | None = request.scope.get(KEY_SCOPE_KEY)
    if key is None:
        raise Forbidden(
            "/api/keys acts as the calling API key and this request has none: keys are "
            "managed with the admin token at /admin/keys, or with `chatkeep keys`"
        )
    return key


Service = Annotated[KeyService, Depends(key_service)]
CallingKey = Annotated[ApiKey, Depends(calling_key)]
Limit = Annotated[int | None, Query(ge=1, le=INT64_MAX, description="Keys per page.")]


def _page(page: Page[ApiKey]) -> dict[str, Any]:
    return {"items": [key_dict(key) for key in page.items], "next_cursor": page.next_cursor}


def _created(issued: IssuedKey) -> dict[str, Any]:
    return {"secret": issued.secret, "key": key_dict(issued.key)}


# -- the admin's ---------------------------------------------------------------------

admin_router = APIRouter(
    prefix="/admin/keys",
    tags=["keys"],
    dependencies=[Depends(require_admin)],
    responses={**error_responses(401), **_FORBIDDEN},
)


@admin_router.get(
    "",
    summary="List every owner's keys (or one owner's), newest first",
    response_model=None,
    responses={200: {"model": KeyPage}, **error_responses(422, 503)},
)
async def admin_list_keys(
    service: Service,
    owner: Annotated[str | None, Query(description="Only this owner's keys.")] = None,
    limit: Limit = None,
    cursor: str | None = None,
) -> dict[str, Any]:
    return _page(await service.list(owner, limit=limit, cursor=cursor))


@admin_router.post(
    "",
    status_code=HTTP_201_CREATED,
    summary="Create a key for any owner; its secret is in this answer only",
    response_model=None,
    responses={201: {"model": CreatedKeyAnswer}, **error_responses(413, 422, 503)},
)
async def admin_create_key(body: NewAdminKey, service: Service) -> dict[str, Any]:
    issued = await service.create(None, owner=body.owner, **body.asked())
    return _created(issued)


@admin_router.delete(
    "/{key_id}",
    summary="Revoke any owner's key, and every key made from it",
    response_model=None,
    responses={200: {"model": KeyAnswer}, **error_responses(404, 422, 503)},
)
async def admin_revoke_key(key_id: str, service: Service) -> dict[str, Any]:
    return key_dict((await service.revoke(key_id, owner=None)).key)


# -- each key's own ------------------------------------------------------------------

router = APIRouter(
    prefix="/api/keys", tags=["keys"], responses={**error_responses(401), **_FORBIDDEN}
)


@router.get(
    "",
    summary="List the calling key and the keys made from it, newest first",
    response_model=None,
    responses={200: {"model": KeyPage}, **error_responses(422, 503)},
)
async def list_own_keys(
    service: Service, caller: CallingKey, limit: Limit = None, cursor: str | None = None
) -> dict[str, Any]:
    page = await service.list(caller.owner_id, limit=limit, cursor=cursor, acting=caller)
    return _page(page)


@router.post(
    "",
    status_code=HTTP_201_CREATED,
    summary="Create a key with at most the calling key's limits; its secret is in this answer",
    response_model=None,
    responses={201: {"model": CreatedKeyAnswer}, **error_responses(413, 422, 503)},
)
async def create_own_key(body: NewKey, service: Service, caller: CallingKey) -> dict[str, Any]:
    owner = body.owner if body.owner is not None else caller.owner_id
    issued = await service.create(caller, owner=owner, **body.asked())
    return _created(issued)


@router.delete(
    "/{key_id}",
    summary="Revoke the calling key or a key made from it, and every key made from that",
    response_model=None,
    responses={200: {"model": KeyAnswer}, **error_responses(404, 422, 503)},
)
async def revoke_own_key(key_id: str, service: Service, caller: CallingKey) -> dict[str, Any]:
    revoked = await service.revoke(key_id, owner=caller.owner_id, acting=caller)
    return key_dict(revoked.key)
