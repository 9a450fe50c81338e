"""The reply hub: where a running reply is published and where its readers subscribe.

The generation task publishes pieces and finishes the reply with a typed `ReplyOutcome`;
any number of readers subscribe after an event id (``Last-Event-ID``) and read at their
own pace; a JSON send waits for the outcome, never longer than it says. The hub outlives
the HTTP connection that started a reply, so a client that goes away loses nothing.

`MemoryReplyHub` keeps replies in this process. A hub shared by several instances (Redis
Streams) implements the same two protocols, so that a resume reaches a reply wherever it
is being generated.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from typing import Any, Protocol

from chatkeep.domain.outcome import ReplyOutcome
from chatkeep.streaming.reply_stream import StreamEvent


class ReplyPublisher(Protocol):
    """The writing end of one reply, held by the task that talks to the model."""

    reply_id: str

    def publish(self, piece: str) -> None:
        """Add a piece of text; raises `ReplyTooLong` past the buffer bound."""

    def seal(self) -> str:
        """End the text and return all of it (what gets committed)."""

    def finish(self, outcome: ReplyOutcome) -> None:
        """Publish the final event. Later calls are ignored."""


class ReplySource(Protocol):
    """The reading end of one reply."""

    reply_id: str
    owner_id: str
    conversation_id: str

    @property
    def finished(self) -> bool: ...

    def position_of(self, last_event_id: str | None) -> int:
        """Where a reader that saw ``last_event_id`` resumes (-1: from the start)."""

    def subscribe(
        self,
        *,
        after: int = -1,
        max_lag_bytes: int | None = None,
        max_subscribers: int | None = None,
        ping_seconds: float | None = None,
    ) -> AsyncIterator[StreamEvent]:
        """The events after ``after``, live, ending with ``done`` or ``error``."""

    async def wait(self, within: float | None = None) -> ReplyOutcome | None:
        """The outcome once the reply ended, or None when ``within`` seconds passed first."""


class ReplyHub(abc.ABC):
    """Running replies and recently finished ones, one per conversation."""

    @abc.abstractmethod
    def open(
        self, *, reply_id: str, conversation_id: str, owner_id: str, message_event: bytes
    ) -> ReplyPublisher:
        """Start a reply; ``message_event`` is the committed user message (event 0)."""

    @abc.abstractmethod
    def close(self, reply: ReplyPublisher) -> None:
        """The reply's task is done with it: keep it for resuming, within bounds."""

    @abc.abstractmethod
    def find(self, owner_id: str, conversation_id: str) -> ReplySource | None:
        """The running or recently finished reply of a conversation of ``owner_id``."""

    @abc.abstractmethod
    def discard(self, conversation_id: str) -> None:
        """Forget a conversation's finished reply (the conversation was deleted)."""

    @abc.abstractmethod
    def counts(self) -> dict[str, Any]:
        """Running and retained replies, readers and bytes, for stats and metrics."""
