"""``GET /admin/providers``: each model's backends, their health, breakers and hedges.

Guarded like every ``/admin`` route (`chatkeep.api.admin.require_admin`): the admin
token, or a direct loopback client when none is set. No API key is ever shown, and a
backend is named by its configured name and its URL without credentials.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from chatkeep.api.admin import require_admin
from chatkeep.api.schemas import error_responses
from chatkeep.api.state import state

router = APIRouter(
    prefix="/admin",
    tags=["admin"],
    dependencies=[Depends(require_admin)],
    responses=error_responses(401),
)


@router.get("/providers", summary="Each model's backends: state, in-flight, latency, breaker")
async def providers(request: Request) -> dict[str, Any]:
    """Per model: a plain provider's kind, or a pool's settings and, per backend, its state
    (healthy, degraded, cooldown), in-flight requests, EWMA and p95 of time to first
    token, error rate over its health window, breaker, last error and hedges won/lost.
    """
    return {"models": state(request).providers.provider_stats()}
