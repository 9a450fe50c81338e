"""Replies: send a message, resume or cancel its reply, and generate it.

send → (a retry is answered from storage) → admission slot → commit the user message and
open a reply (one transaction) → build the bounded context → the generation task streams
the model's pieces into the reply hub and commits the assistant message at the end. The
task belongs to the server, not to the HTTP request: a client that disconnects loses
nothing, and whatever happens (a backend failure, a cancel, a shutdown, a bug, a storage
failure) the reply's stream gets a final event. A send may hand over a `ReplyLease` (its
key's slot for open replies): the reply holds it for as long as it runs, so a client that
leaves cannot start reply after reply on one slot.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from chatkeep.cache.working_set import WorkingSet
from chatkeep.domain.context import Context
from chatkeep.domain.outcome import ReplyOutcome
from chatkeep.domain.records import Conversation, Message, Usage
from chatkeep.domain.replies import after_reply, send_fingerprint
from chatkeep.domain.tokens import estimate_tokens
from chatkeep.errors import (
    ChatkeepError,
    NotFound,
    ProviderError,
    ReplyCancelled,
    ReplyInProgress,
    ShuttingDown,
    StorageError,
    UnknownModel,
)
from chatkeep.logs import truncate
from chatkeep.serialize import message_json
from chatkeep.service.context_reader import read_context
from chatkeep.service.pipeline import GenerationPipeline, Slot
from chatkeep.service.reply_commit import commit_reply
from chatkeep.service.summaries import Summarizer
from chatkeep.storage.base import ReplyStart, Store
from chatkeep.streaming.hub import ReplyHub, ReplyPublisher, ReplySource
from chatkeep.streaming.reply_stream import ReplyTooLong

logger = logging.getLogger("chatkeep.service.replies")

SHUTDOWN_REASON = "the server shut down while this reply was being generated"
CANCEL_REASON = "the reply was cancelled by the client"

#: A failure reason may quote a backend's answer; a log line keeps this much of one.
REASON_LOG_CHARS = 300

#: Beyond the model's own timeout, how long a JSON send waits for the commit of its reply.
#: The generation task always ends within the model timeout; this covers the commit.
COMMIT_WAIT_SECONDS = 30.0


class ReplyLease(Protocol):
    """Something a reply holds while it runs (`chatkeep.quotas.lease.StreamLease`).

    `hold` when the reply starts, `release` exactly once when it ends, however it ends.
    """

    def hold(self) -> None:
        """Take one more hold on the lease."""

    def release(self) -> None:
        """Let go of one hold."""


@dataclass(slots=True)
class SendResult:
    """A send in progress or replayed: the user message, and its reply's stream or outcome.

    ``source`` is set while the reply can be read live (running, or finished recently);
    ``outcome`` is set when the reply is already committed (a replayed send).
    """

    start: ReplyStart
    source: ReplySource | None
    outcome: ReplyOutcome | None
    #: How long a caller waits for the outcome at most (the reply's timeout + commit).
    wait_seconds: float
    #: The user message as JSON, when it was already encoded (for the reply's first event).
    user_json: bytes | None = None


@dataclass(slots=True)
class Resumption:
    """What a resume reads: the live reply, or the last committed one."""

    source: ReplySource | None
    user_message: Message | None = None
    outcome: ReplyOutcome | None = None


@dataclass(slots=True)
class _Running:
    """A reply being generated: its task, and why it was stopped if it was."""

    task: asyncio.Task[None] | None = None
    stop: ChatkeepError | None = None
    #: Whether the task has begun: one cancelled before its first step would never run
    #: its clean-up, so a stop that comes that early is left for the task to find.
    started: bool = False
    #: False once the model is done and the reply is being committed: a commit is never
    #: interrupted, so that what the store holds and what the readers are told agree.
    generating: bool = True
    #: Held from the task's creation to the end of its clean-up.
    lease: ReplyLease | None = None


class ReplyService:
    """Sends messages and runs their replies."""

    def __init__(
        self,
        *,
        store: Store,
        pipeline: GenerationPipeline,
        hub: ReplyHub,
        working_set: WorkingSet,
        summarizer: Summarizer | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.pipeline = pipeline
        self.hub = hub
        self.working_set = working_set
        self.summarizer = summarizer
        self._clock = clock
        self._running: dict[str, _Running] = {}
        self._shutdown_timer: asyncio.TimerHandle | None = None
        #: When (loop time) running replies are stopped, once a stop was asked for.
        self._stop_at: float | None = None
        self._stopped = False

    async def send(
        self,
        owner_id: str,
        conversation_id: str,
        *,
        content: str,
        client_message_id: str | None,
        priority: int = 0,
        lease: ReplyLease | None = None,
    ) -> SendResult:
        """Commit the user message and start its reply (or find the first send's result).

        ``lease`` is held by the reply this send starts, until it ends; a send that starts
        none (replayed, or refused) leaves it as it was.
        """
        fingerprint = send_fingerprint(content)
        if client_message_id is not None:
            # A retry must not wait in line or be refused for load: answer it from storage.
            start = await self.store.find_send(
                owner_id, conversation_id, client_message_id, fingerprint=fingerprint
            )
            if start is not None:
                return self._replayed(start)
        slot = await self.pipeline.admit(priority, owner_id)
        try:
            start = await self.store.begin_reply(
                owner_id,
                conversation_id,
                content=content,
                client_message_id=client_message_id,
                fingerprint=fingerprint,
            )
        except BaseException:
            slot.release()
            raise
        if start.replayed:
            slot.release()
            return self._replayed(start)
        conversation, user_message = start.conversation, start.user_message
        self.working_set.record_messages(owner_id, conversation_id, conversation, user_message)
        user_json = message_json(user_message)
        reply = self.hub.open(
            reply_id=user_message.id,
            conversation_id=conversation_id,
            owner_id=owner_id,
            message_event=user_json,
        )
        running = _Running(lease=lease)
        task = running.task = asyncio.create_task(
            self._generate(conversation, user_message, reply, slot, running),
            name=f"reply-{conversation_id}",
        )
        if lease is not None:
            # Only once the task exists: its clean-up is what lets go of this hold.
            lease.hold()
        self._running[conversation_id] = running
        if self._stopped:  # admitted just before the grace ran out: stopped at once
            self._stop(running, ShuttingDown(SHUTDOWN_REASON))

        def forget(_: asyncio.Task[None]) -> None:
            # Only this reply's entry: the conversation's next reply may already be
            # registered when this callback runs (its begin may share our commit).
            if self._running.get(conversation_id) is running:
                del self._running[conversation_id]

        task.add_done_callback(forget)
        source = self.hub.find(owner_id, conversation_id)
        return SendResult(start, source, None, self._wait(start), user_json)

    def _replayed(self, start: ReplyStart) -> SendResult:
        assistant = start.assistant_message
        if assistant is not None:
            return SendResult(start, None, ReplyOutcome.committed(assistant), 0.0)
        source = self.hub.find(start.conversation.owner_id, start.conversation.id)
        if source is not None and source.reply_id != start.user_message.id:
            source = None
        return SendResult(start, source, None, self._wait(start))

    def _wait(self, start: ReplyStart) -> float:
        try:
            timeout = self.pipeline.providers.route(start.conversation.model).timeout_seconds
        except UnknownModel:
            # A model removed from the configuration: the reply fails at once, and says so.
            timeout = 0.0
        return timeout + COMMIT_WAIT_SECONDS

    async def outcome(self, result: SendResult) -> ReplyOutcome:
        """The outcome of a send: at once when replayed, else when its reply ends.

        Never waits longer than ``result.wait_seconds``; a reply that is still open
        then (or whose stream is gone) raises `ReplyInProgress`, telling the client to
        read it from the stream or the history.
        """
        if result.outcome is not None:
            return result.outcome
        if result.source is not None:
            outcome = await result.source.wait(result.wait_seconds)
            if outcome is not None:
                return outcome
        raise ReplyInProgress(
            "the reply to this message is still being generated; read it from "
            f"/api/conversations/{result.start.conversation.id}/stream or the history"
        )

    async def resume(self, owner_id: str, conversation_id: str) -> Resumption:
        """The reply a client reconnecting to a conversation reads."""
        source = self.hub.find(owner_id, conversation_id)
        if source is not None:
            return Resumption(source)
        recent = await self.store.recent_messages(owner_id, conversation_id, limit=2)
        assistant = next((m for m in recent if m.role == "assistant"), None)
        user = next(
            (m for m in recent if assistant is not None and m.id == assistant.reply_to), None
        )
        if assistant is None or user is None:
            raise NotFound(f"conversation {conversation_id} has no reply to stream")
        return Resumption(None, user, ReplyOutcome.committed(assistant))

    async def cancel(self, owner_id: str, conversation_id: str) -> ReplyOutcome:
        """Stop the running reply of a conversation; what it generated so far is stored."""
        source = self.hub.find(owner_id, conversation_id)
        running = self._running.get(conversation_id)
        if source is None or running is None or source.finished:
            await self.store.get_conversation(owner_id, conversation_id)  # 404 if not ours
            raise NotFound(f"conversation {conversation_id} has no reply being generated")
        self._stop(running, ReplyCancelled(CANCEL_REASON))
        outcome = await source.wait(COMMIT_WAIT_SECONDS)
        if outcome is None:
            raise ReplyInProgress("the reply is still being stopped; read it from the history")
        return outcome

    @staticmethod
    def _stop(running: _Running, why: ChatkeepError) -> None:
        if running.stop is None and running.generating:
            running.stop = why
            if running.started and running.task is not None:
                running.task.cancel()

    async def _generate(
        self,
        conversation: Conversation,
        user_message: Message,
        reply: ReplyPublisher,
        slot: Slot,
        running: _Running,
    ) -> None:
        outcome: ReplyOutcome | None = None
        try:
            running.started = True
            outcome = await self._generate_and_commit(
                conversation, user_message, reply, slot, running
            )
        finally:
            slot.release()
            if running.lease is not None:
                running.lease.release()
            if outcome is None:
                # Cancelled mid-commit or a bug past every handler: the reply still ends.
                outcome = ReplyOutcome.unstored(StorageError("the reply could not be stored"))
            reply.finish(outcome)
            self.hub.close(reply)

    async def _generate_and_commit(
        self,
        conversation: Conversation,
        user_message: Message,
        reply: ReplyPublisher,
        slot: Slot,
        running: _Running,
    ) -> ReplyOutcome:
        error: ChatkeepError | None = None
        usage: Usage | None = None
        context: Context | None = None
        if running.stop is not None:  # stopped before its first step
            running.generating = False
            return await self._commit(conversation, user_message, reply.seal(), None, running.stop)
        try:
            route = self.pipeline.providers.route(conversation.model)
            context = await read_context(
                self.store, self.working_set, route, conversation, user_message
            )
            async for chunk in self.pipeline.pieces(conversation.model, context.messages):
                reply.publish(chunk.text)
                usage = chunk.usage or usage
            if usage is None:
                usage = Usage(context.tokens, estimate_tokens(reply.seal()))
        except ChatkeepError as exc:
            error = exc
        except ReplyTooLong as exc:
            error = ProviderError(str(exc))
        except asyncio.CancelledError:
            why = running.stop
            running.generating = False
            task = asyncio.current_task()
            if why is not None and task is not None:
                task.uncancel()  # our own stop, handled here: not the task's cancellation
            # Stopped on purpose (a cancel, the end of the shutdown grace) or cancelled
            # by the event loop closing: store what there is, then let a real
            # cancellation go on.
            outcome = await asyncio.shield(
                self._commit(
                    conversation,
                    user_message,
                    reply.seal(),
                    None,
                    why or ShuttingDown(SHUTDOWN_REASON),
                )
            )
            if why is None:
                reply.finish(outcome)
                raise
            return outcome
        except Exception as exc:  # a bug must still close the reply, never leave it open
            logger.exception("reply generation failed")
            error = ChatkeepError(f"internal error: {type(exc).__name__}")
        running.generating = False
        slot.release()  # the backend is done; committing needs no generation slot
        if error is None and self.summarizer is not None and context is not None:
            self.summarizer.consider(conversation, context)
        if error is not None:
            logger.warning(
                "reply ended incomplete: %s",
                truncate(error.message, REASON_LOG_CHARS),
                extra={"conversation_id": conversation.id, "model": conversation.model},
            )
        return await self._commit(conversation, user_message, reply.seal(), usage, error)

    async def _commit(
        self,
        conversation: Conversation,
        user_message: Message,
        content: str,
        usage: Usage | None,
        error: ChatkeepError | None,
    ) -> ReplyOutcome:
        """Commit the reply (`commit_reply`) and keep the working set in step with it."""
        outcome = await commit_reply(self.store, conversation, user_message, content, usage, error)
        if outcome.message is not None:
            after = after_reply(conversation, outcome.message)
            self.working_set.record_messages(
                conversation.owner_id, conversation.id, after, outcome.message
            )
        return outcome

    def begin_shutdown(self, grace_seconds: float) -> None:
        """The server is stopping: replies get ``grace_seconds`` to finish, then stop.

        Called as soon as the stop is asked for, so that readers of a reply still running
        at the end of the grace get its final event (``error``, code ``shutdown``) before
        their connections close.
        """
        if self._stop_at is not None:
            return
        # New generations are refused from now on (503 `shutdown`, to retry elsewhere);
        # a retried send is still answered from storage.
        self.pipeline.stop_admitting()
        loop = asyncio.get_running_loop()
        self._stop_at = loop.time() + grace_seconds
        self._shutdown_timer = loop.call_at(self._stop_at, self._stop_all)

    def _stop_all(self) -> None:
        self._stopped = True
        self.pipeline.stateless.stop()
        for running in list(self._running.values()):
            self._stop(running, ShuttingDown(SHUTDOWN_REASON))

    async def shutdown(self, grace_seconds: float) -> None:
        """Let running replies finish within the grace, then stop and store them.

        The grace counts from `begin_shutdown` when the server called it at the signal,
        else from now.
        """
        self.begin_shutdown(grace_seconds)
        assert self._stop_at is not None
        loop = asyncio.get_running_loop()
        tasks = {r.task for r in self._running.values() if r.task is not None}
        if tasks:
            await asyncio.wait(tasks, timeout=max(0.0, self._stop_at - loop.time()))
        self._stop_all()
        while tasks := {r.task for r in self._running.values() if r.task is not None}:
            await asyncio.wait(tasks)
        if self._shutdown_timer is not None:
            self._shutdown_timer.cancel()

    @property
    def running_replies(self) -> int:
        return len(self._running)
