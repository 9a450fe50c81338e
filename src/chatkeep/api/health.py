"""Liveness and readiness."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

from chatkeep.api.state import state
from chatkeep.errors import StorageError


async def healthz(request: Request) -> JSONResponse:
    """``GET /healthz``: 200 while the process is up; it checks nothing else on purpose."""
    return JSONResponse({"status": "ok"})


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
    ready = all(value == "ok" for value in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "checks": checks}, 200 if ready else 503
    )
