"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse

from chatkeep.api.schemas import HealthAnswer, ReadyAnswer, error_responses
from chatkeep.api.state import state
from chatkeep.errors import StorageError

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=None, responses={200: {"model": HealthAnswer}})
async def healthz(request: Request) -> JSONResponse:
    """``GET /healthz``: 200 while the process is up; it checks nothing else on purpose."""
    return JSONResponse({"status": "ok"})


@router.get(
    "/readyz",
    response_model=None,
    responses={200: {"model": ReadyAnswer}, **error_responses(503)},
)
async def readyz(request: Request) -> JSONResponse:
    """``GET /readyz``: 200 when storage answers and load is not being shed."""
    app = state(request)
    checks: dict[str, str] = {}
    try:
        await app.store.list_conversations(
            app.settings.default_owner, status=None, limit=1, cursor=None
        )
        checks["storage"] = "ok"
    except StorageError as exc:
        checks["storage"] = exc.message
    governor = app.memory.governor
    checks["memory"] = f"shedding load (tier {governor.tier})" if governor.shedding else "ok"
    failing = {name: value for name, value in checks.items() if value != "ok"}
    if not failing:
        return JSONResponse({"status": "ready", "checks": checks})
    # Not ready is an error answer like any other, with the checks beside it.
    message = "; ".join(f"{name}: {value}" for name, value in failing.items())
    return JSONResponse(
        {
            "error": {"code": "not_ready", "message": message},
            "status": "not ready",
            "checks": checks,
        },
        503,
    )
