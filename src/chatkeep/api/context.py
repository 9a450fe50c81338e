"""What the routes share: the application state, reached from a request."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from chatkeep.conversations import ConversationService
from chatkeep.providers.registry import ProviderRegistry
from chatkeep.settings import Settings
from chatkeep.storage.base import Store
from chatkeep.streaming.admission import AdmissionQueue
from chatkeep.streaming.registry import ReplyStreams


@dataclass(slots=True)
class AppState:
    """The long-lived parts of one running server."""

    settings: Settings
    store: Store
    providers: ProviderRegistry
    admission: AdmissionQueue
    streams: ReplyStreams
    service: ConversationService


def state(request: Request) -> AppState:
    """The server's state, set up by the app's lifespan."""
    app_state: AppState = request.app.state.chatkeep
    return app_state
