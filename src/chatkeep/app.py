"""`create_app(settings)`: the wiring of one chatkeep server.

Every request goes through one middleware stack (`middleware_stack`), hot routes
included; routes live in `chatkeep.api`. The lifespan opens storage, closes
replies a crash left open, and on shutdown lets running replies finish for
``shutdown_grace_seconds`` before storing them as incomplete.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Route

from chatkeep import __version__
from chatkeep.admission.queue import AdmissionQueue
from chatkeep.api import (
    admin,
    conversation_routes,
    health,
    key_routes,
    openai_routes,
    provider_routes,
    transfer_routes,
)
from chatkeep.api import metrics as metrics_routes
from chatkeep.api.errors import install_error_handlers
from chatkeep.api.metrics import Metrics
from chatkeep.api.middleware import (
    AuthMiddleware,
    BodyLimitMiddleware,
    HotRoutes,
    MetricsMiddleware,
    StackedFastAPI,
)
from chatkeep.api.middleware.auth import PUBLIC_PATHS, KeyLookup
from chatkeep.api.middleware.hot_routes import find_route
from chatkeep.api.openapi import document_auth
from chatkeep.api.state import AppState
from chatkeep.auth.key_cache import KeyCache
from chatkeep.cache.working_set import WorkingSet
from chatkeep.domain.keys import ApiKey
from chatkeep.errors import ChatkeepError, UnknownModel
from chatkeep.memory.watch import MemoryWatch, build_memory_watch
from chatkeep.providers.registry import ProviderRegistry
from chatkeep.quotas.failures import FailedAttempts
from chatkeep.quotas.middleware import STREAM_ROUTES, QuotaMiddleware
from chatkeep.quotas.rate import KeyRateLimiter
from chatkeep.quotas.streams import OpenStreams
from chatkeep.service.conversations import ConversationService
from chatkeep.service.job_queue import BoundedJobQueue
from chatkeep.service.pipeline import GenerationPipeline
from chatkeep.service.replies import ReplyService
from chatkeep.service.retention import RetentionRunner
from chatkeep.service.summaries import Summarizer
from chatkeep.settings import Settings
from chatkeep.storage.base import Store
from chatkeep.storage.memory import MemoryStore
from chatkeep.storage.sqlite import DATABASE_FILE, SQLiteStore
from chatkeep.streaming.memory_hub import MemoryReplyHub

logger = logging.getLogger("chatkeep")


@dataclass(frozen=True, slots=True)
class Quotas:
    """The per-key and per-address limits the auth and quota layers apply."""

    rate: KeyRateLimiter
    streams: OpenStreams
    attempts: FailedAttempts


def build_store(settings: Settings) -> Store:
    """The store the settings ask for."""
    if settings.storage == "memory":
        return MemoryStore()
    return SQLiteStore(
        settings.data_dir / DATABASE_FILE,
        synchronous=settings.sqlite.synchronous,
        busy_timeout_ms=settings.sqlite.busy_timeout_ms,
        readers=settings.sqlite.readers,
    )


def create_app(
    settings: Settings,
    *,
    store: Store | None = None,
    providers: ProviderRegistry | None = None,
    clock: Callable[[], float] = time.monotonic,
    memory: MemoryWatch | None = None,
) -> StackedFastAPI:
    """Build the ASGI application. Nothing is opened until its lifespan starts."""
    if settings.default_model not in settings.models:
        raise UnknownModel(
            f"default_model {settings.default_model!r} is not among the configured models "
            f"({', '.join(sorted(settings.models))})"
        )
    # The providers first: a model the registry cannot build stops here, before the store
    # has connections to close.
    the_providers = providers or ProviderRegistry.from_settings(settings)
    the_store = store or build_store(settings)
    admission = AdmissionQueue(
        max_inflight=settings.admission.max_inflight_generations,
        max_queued=settings.admission.max_queued_generations,
        retry_after=settings.admission.retry_after_seconds,
        max_queued_per_owner=settings.admission.max_queued_per_owner,
    )
    hub = MemoryReplyHub(
        retention_seconds=settings.streams.retention_seconds,
        max_retained=settings.streams.max_retained,
        max_bytes=settings.streams.buffer_bytes,
        clock=clock,
    )
    working_set = WorkingSet(
        the_store,
        maxsize=settings.working_set.bytes,
        max_recent_messages=settings.working_set.recent_messages,
        # An entry never needs more than the largest context a model can take.
        max_recent_tokens=max(m.context_tokens for m in settings.models.values()),
    )
    summary_queue = BoundedJobQueue(
        maxsize=settings.summaries.queue_size,
        concurrency=settings.summaries.concurrency,
        job_timeout=settings.summaries.job_timeout_seconds,
        name="summaries",
    )
    summarizer = Summarizer(
        store=the_store,
        providers=the_providers,
        queue=summary_queue,
        threshold_tokens=settings.summaries.threshold_tokens,
        priority=settings.summaries.priority,
        max_tokens=settings.summaries.max_tokens,
        on_summary=working_set.invalidate,
    )
    pipeline = GenerationPipeline(
        providers=the_providers,
        admission=admission,
        idle_timeout=settings.streams.idle_timeout_seconds,
    )
    replies = ReplyService(
        store=the_store,
        pipeline=pipeline,
        hub=hub,
        working_set=working_set,
        summarizer=summarizer,
        clock=clock,
    )
    conversations_service = ConversationService(
        store=the_store,
        providers=the_providers,
        working_set=working_set,
        hub=hub,
        limits=settings.limits,
        default_model=settings.default_model,
    )

    def forget_deleted(conversation_id: str) -> None:
        working_set.invalidate(conversation_id)
        hub.discard(conversation_id)

    retention = RetentionRunner(
        the_store,
        settings.retention,
        on_archived=working_set.invalidate,
        on_deleted=forget_deleted,
    )
    watch = memory or build_memory_watch(settings.memory)
    admission.gate = watch.governor.ensure_generation_allowed
    watch.governor.register(hub)
    watch.governor.register(working_set)
    key_cache = KeyCache(
        the_store,
        maxsize=settings.access.cache_size,
        ttl_seconds=settings.access.cache_seconds,
        clock=clock,
    )
    # Per-key tables hold at most as many keys as the key cache does.
    quotas = Quotas(
        rate=KeyRateLimiter(max_keys=settings.access.cache_size),
        streams=OpenStreams(max_keys=settings.access.cache_size),
        attempts=FailedAttempts(
            settings.access.failed_per_minute, settings.access.max_tracked_clients, clock=clock
        ),
    )
    metrics = Metrics()
    metrics.attach_quotas(rate=quotas.rate, streams=quotas.streams, attempts=quotas.attempts)
    the_store.commit_observer = metrics.observe_commit
    app_state = AppState(
        settings=settings,
        store=the_store,
        providers=the_providers,
        admission=admission,
        hub=hub,
        pipeline=pipeline,
        conversations=conversations_service,
        replies=replies,
        memory=watch,
        caches={"working_set": working_set, "api_keys": key_cache},
        summarizer=summarizer,
        keys=key_cache,
        retention=retention,
    )
    metrics.attach(app_state)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        reaper: asyncio.Task[None] | None = None
        try:
            await the_store.open()
        except ChatkeepError as exc:
            # Said in one line by the stack (`StackedFastAPI`), not as a traceback: a
            # locked or damaged data directory is the operator's to fix, not a bug.
            app.state.startup_error = exc.message
            raise
        try:
            recovered = await the_store.recover_open_replies()
            if recovered:
                logger.warning("closed %d replies left open by an unclean stop", recovered)
            app.state.chatkeep = app_state
            await watch.sampler.start()
            summary_queue.start()
            retention.start()
            reaper = asyncio.create_task(
                hub.reap_forever(max(1.0, min(settings.streams.retention_seconds, 30.0))),
                name="reply-stream-reaper",
            )
            logger.info(
                "memory budget %d bytes (%s)",
                watch.governor.budget.bytes,
                watch.governor.budget.source,
            )
            yield
        finally:
            if reaper is not None:
                reaper.cancel()
                await asyncio.gather(reaper, return_exceptions=True)
            await watch.sampler.stop()
            await retention.stop()
            await replies.shutdown(settings.shutdown_grace_seconds)
            await summary_queue.stop()
            await working_set.close()
            await the_providers.aclose()
            await the_store.close()

    app = StackedFastAPI(
        title="chatkeep",
        version=__version__,
        summary="Durable conversations for LLM applications, in bounded memory.",
        lifespan=lifespan,
    )
    app.state.metrics = metrics
    install_error_handlers(app)
    app.include_router(conversation_routes.router)
    app.include_router(transfer_routes.router)
    app.include_router(admin.router)
    app.include_router(provider_routes.router)
    app.include_router(key_routes.admin_router)
    app.include_router(key_routes.router)
    app.include_router(openai_routes.router)
    app.include_router(health.router)
    app.include_router(metrics_routes.router)
    document = app.openapi

    def openapi_with_auth() -> dict[str, Any]:
        """FastAPI's document, with what the auth and quota layers answer before any route."""
        found = document()
        if "securitySchemes" not in found.get("components", {}):
            document_auth(found, PUBLIC_PATHS)
        return found

    app.openapi = openapi_with_auth  # type: ignore[method-assign]
    app.layers = middleware_stack(
        app,
        settings,
        metrics,
        watch.sampler.record_request,
        lookup=key_cache.lookup,
        known=key_cache.known,
        quotas=quotas,
    )
    return app


def begin_shutdown(app: FastAPI) -> None:
    """The server was asked to stop: running replies get their grace period from now on."""
    app_state: AppState | None = getattr(app.state, "chatkeep", None)
    if app_state is not None:
        app_state.replies.begin_shutdown(app_state.settings.shutdown_grace_seconds)


#: Routes answered by `HotRoutes` inside the stack, without FastAPI's per-request machinery.
HOT_ROUTES = (
    ("POST", "/v1/chat/completions"),
    ("POST", "/api/conversations/{conversation_id}/messages"),
)


def middleware_stack(
    app: FastAPI,
    settings: Settings,
    metrics: Metrics,
    on_request: Callable[[], None],
    *,
    lookup: KeyLookup,
    known: Callable[[str], ApiKey | None],
    quotas: Quotas,
) -> list[Middleware]:
    """The one middleware stack, outermost first; every request goes through all of it.

    1. metrics: counts every answer, refusals by the layers below included (a body
       refused for its size is a request an operator wants to see);
    2. body limit: ``413`` before a body over ``max_body_bytes`` is read;
    3. auth: the request's owner (and API key) into the scope, or ``401``/``403``/``429``
       (`chatkeep.api.middleware.auth`);
    4. quotas: the key's request rate and its replies open at once → ``429``
       (`chatkeep.quotas.middleware`);
    5. hot routes: ``POST /v1/chat/completions`` and the send route, answered by their
       endpoints directly; everything else goes on to FastAPI (exception handlers, router).

    Each layer is a plain ASGI class ``cls(app, **options)`` that passes through the scope
    types it does not handle. Nothing is added around FastAPI alone (`StackedFastAPI`
    refuses ``add_middleware``): a concern for every request is a layer here.
    """
    # Every route one by one: as the routers declare them (newer FastAPI includes a router
    # lazily, so `app.routes` need not list its routes), and those added to the app itself.
    routes: list[BaseRoute] = [
        *conversation_routes.router.routes,
        *transfer_routes.router.routes,
        *admin.router.routes,
        *provider_routes.router.routes,
        *key_routes.admin_router.routes,
        *key_routes.router.routes,
        *openai_routes.router.routes,
        *health.router.routes,
        *metrics_routes.router.routes,
        *(route for route in app.routes if isinstance(route, Route)),
    ]
    hot = [find_route(routes, method, path) for method, path in HOT_ROUTES]
    return [
        Middleware(MetricsMiddleware, metrics=metrics, on_request=on_request, routes=routes),
        Middleware(BodyLimitMiddleware, max_bytes=settings.limits.max_body_bytes),
        Middleware(
            AuthMiddleware,
            mode=settings.access.mode,
            default_owner=settings.default_owner,
            admin_token=settings.admin_token,
            metrics_token=settings.access.metrics_token,
            lookup=lookup,
            known=known,
            attempts=quotas.attempts,
            is_direct_loopback=admin.is_direct_loopback,
        ),
        Middleware(
            QuotaMiddleware,
            rate=quotas.rate,
            streams=quotas.streams,
            stream_routes=[find_route(routes, method, path) for method, path in STREAM_ROUTES],
        ),
        Middleware(HotRoutes, routes=hot),
    ]
