"""``/admin``: JSON views of memory, streams, storage and providers, and the profiler.

With ``CHATKEEP_ADMIN_TOKEN`` set, every request needs ``Authorization: Bearer <token>``.
Without one, only loopback clients get in (and `chatkeep serve` refuses to listen on a
non-loopback address in that case), so an admin surface is never open to a network by
accident.
"""

from __future__ import annotations

import gc
import hmac
import ipaddress
import os
import sys
import threading
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Request

from chatkeep import __version__
from chatkeep.api.state import state
from chatkeep.errors import Unauthorized


def is_loopback(host: str | None) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``."""
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def require_admin(request: Request) -> None:
    """Let the request through only with the admin token, or from loopback when none is set."""
    token = state(request).settings.admin_token
    if token:
        given = request.headers.get("authorization", "")
        scheme, _, credentials = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            credentials.encode(), token.encode()
        ):
            raise Unauthorized("admin endpoints need 'Authorization: Bearer <admin token>'")
        return
    client = request.client.host if request.client else None
    if not is_loopback(client):
        raise Unauthorized("admin endpoints are open to loopback only; set CHATKEEP_ADMIN_TOKEN")


router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)])


@router.get("/memory", summary="Memory budget, tier, trend and bounded structures")
async def memory(request: Request) -> dict[str, Any]:
    app = state(request)
    snapshot = app.memory.governor.snapshot()
    snapshot["caches"] = app.cache_stats()
    snapshot["profiler_busy"] = app.memory.profiler.busy
    return snapshot


@router.post("/memory/profile", summary="Trace allocations for a while; top lines by growth")
async def profile(
    request: Request,
    seconds: Annotated[float, Body(gt=0, description="How long to trace.")] = 10.0,
    top: Annotated[int, Body(ge=1, description="How many lines to return.")] = 20,
) -> dict[str, Any]:
    return await state(request).memory.profiler.profile(seconds, top)


@router.get("/stats", summary="Streams, generations, storage, providers and the process")
async def stats(request: Request) -> dict[str, Any]:
    app = state(request)
    body: dict[str, Any] = {
        "version": __version__,
        "pid": os.getpid(),
        "python": sys.version.split()[0],
        "threads": threading.active_count(),
        "gc_counts": gc.get_count(),
        "generations": {
            "inflight": app.admission.inflight,
            "queued": app.admission.queued,
            "rejected": app.admission.rejected,
            "max_inflight": app.admission.max_inflight,
            "max_queued": app.admission.max_queued,
            "running_replies": app.service.running_replies,
        },
        "streams": app.streams.counts(),
        "caches": app.cache_stats(),
        "summaries": app.summarizer.stats() if app.summarizer else None,
        "storage": app.store.stats(),
        "models": app.providers.names(),
        "memory": {
            "tier": app.memory.governor.tier,
            "rss": app.memory.sampler.latest.rss if app.memory.sampler.latest else None,
            "budget": app.memory.governor.budget.bytes,
        },
    }
    return body
