"""What the routes share: the application state, reached from a request."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from starlette.requests import Request

from chatkeep.admission.queue import AdmissionQueue
from chatkeep.auth.key_cache import KeyCache
from chatkeep.memory.watch import MemoryWatch
from chatkeep.providers.registry import ProviderRegistry
from chatkeep.service.conversations import ConversationService
from chatkeep.service.pipeline import GenerationPipeline
from chatkeep.service.replies import ReplyService
from chatkeep.service.retention import RetentionRunner
from chatkeep.settings import Settings
from chatkeep.storage.base import Store
from chatkeep.streaming.hub import ReplyHub


class HasStats(Protocol):
    """A bounded structure that reports its size and counters."""

    def stats(self) -> dict[str, Any]: ...


@dataclass(slots=True)
class AppState:
    """The long-lived parts of one running server."""

    settings: Settings
    store: Store
    providers: ProviderRegistry
    admission: AdmissionQueue
    hub: ReplyHub
    pipeline: GenerationPipeline
    conversations: ConversationService
    replies: ReplyService
    memory: MemoryWatch
    caches: dict[str, HasStats] = field(default_factory=dict)
    summarizer: HasStats | None = None
    #: API keys by the hash of their secret (looked up by the auth layer).
    keys: KeyCache | None = None
    #: The retention policy's background runner.
    retention: RetentionRunner | None = None

    def cache_stats(self) -> dict[str, dict[str, Any]]:
        """Each bounded cache's stats, by name."""
        return {name: cache.stats() for name, cache in self.caches.items()}


def state(request: Request) -> AppState:
    """The server's state, set up by the app's lifespan."""
    app_state: AppState = request.app.state.chatkeep
    return app_state
