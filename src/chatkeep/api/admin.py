"""``/admin``: JSON views of memory, streams, storage and providers, and the profiler.

With ``CHATKEEP_ADMIN_TOKEN`` set, every request needs ``Authorization: Bearer <token>``.
Without one, only loopback clients get in (and `chatkeep serve` refuses to listen on a
non-loopback address in that case), so an admin surface is never open to a network by
accident. Loopback trust ends where any forwarding header appears: behind a reverse proxy
on the same host every client connects from loopback, and the header is the only sign
that the request came from elsewhere (`came_through_proxy`).
"""

from __future__ import annotations

import gc
import ipaddress
import os
import sys
import threading
from collections.abc import Iterable
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Request
from starlette.types import Scope

from chatkeep import __version__
from chatkeep.api.middleware.auth import ADMIN_SCOPE_KEY
from chatkeep.api.schemas import error_responses
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


#: Headers proxies add, named exactly; with the patterns in `came_through_proxy` they cover
#: the standard (RFC 7239 ``Forwarded``, ``Via``) and the vendors' (nginx, Cloudflare,
#: Akamai, Fastly, Envoy, load balancers).
FORWARDING_HEADERS = frozenset(
    {
        b"via",
        b"x-envoy-external-address",
        b"x-remote-addr",
        b"x-original-host",
        b"x-host",
        b"cdn-loop",
        b"cloudfront-viewer-address",
        b"x-azure-fdid",
        b"akamai-origin-hop",
    }
)


_IP_SUFFIXES = (b"-ip", b"clientip", b"socketip")


def came_through_proxy(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """True when any header says a proxy passed the request on.

    Beyond `FORWARDING_HEADERS`, any name containing ``forwarded`` (``Forwarded``,
    ``X-Forwarded-For``/``-Host``/``-Proto``, ``X-Original-Forwarded-For``…) or ending in
    ``-ip``, ``clientip`` or ``socketip`` (``X-Real-IP``, ``X-Client-IP``,
    ``True-Client-IP``, ``CF-Connecting-IP``, ``Fastly-Client-IP``, ``X-Cluster-Client-IP``,
    ``X-Azure-ClientIP``, ``X-Azure-SocketIP``…): a false alarm costs a loopback client the
    token, a miss would open the admin surface to the network.
    """
    for name, _ in headers:
        if name in FORWARDING_HEADERS or b"forwarded" in name or name.endswith(_IP_SUFFIXES):
            return True
    return False


def is_trusted_loopback(request: Request) -> bool:
    """A client on this host that no proxy stands in for."""
    return is_direct_loopback(request.scope)


def is_direct_loopback(scope: Scope) -> bool:
    """`is_trusted_loopback` of a raw ASGI scope."""
    client = scope.get("client")
    return is_loopback(client[0] if client else None) and not came_through_proxy(scope["headers"])


def require_admin(request: Request) -> None:
    """Let the request through only with the admin token, or from loopback when none is set.

    The token is checked once, by the auth layer of the middleware stack (which reads
    ``Authorization: Bearer`` and ``x-api-key`` alike); it leaves its verdict in the scope.
    """
    if request.scope.get(ADMIN_SCOPE_KEY):
        return
    if state(request).settings.admin_token:
        raise Unauthorized("admin endpoints need 'Authorization: Bearer <admin token>'")
    if not is_trusted_loopback(request):
        raise Unauthorized(
            "admin endpoints are open to direct loopback clients only (no proxy headers); "
            "set CHATKEEP_ADMIN_TOKEN"
        )


router = APIRouter(
    prefix="/admin",
    tags=["admin"],
    dependencies=[Depends(require_admin)],
    responses=error_responses(401),
)


@router.get("/memory", summary="Memory budget, tier, trend and bounded structures")
async def memory(request: Request) -> dict[str, Any]:
    app = state(request)
    snapshot = app.memory.governor.snapshot()
    snapshot["caches"] = app.cache_stats()
    snapshot["profiler_busy"] = app.memory.profiler.busy
    return snapshot


@router.post(
    "/memory/profile",
    summary="Trace allocations for a while; top lines by growth",
    responses=error_responses(422),
)
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
            "running_replies": app.replies.running_replies,
        },
        "streams": app.hub.counts(),
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
