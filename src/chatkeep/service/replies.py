"""The conversation service: the path of one reply, from send to commit.

send → validate → take an admission slot → commit the user message and open a
reply (one transaction) → build the bounded context → start the generation
task, which streams into a `ReplyStream` and commits the assistant message at
the end. The task outlives the HTTP request: a client that disconnects does not
lose the reply.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from typing import Any

from chatkeep.admission.queue import AdmissionQueue
from chatkeep.cache.working_set import WorkingSet
from chatkeep.domain.context import Context, build_context
from chatkeep.domain.records import Conversation, Message, MessageStatus, Usage
from chatkeep.domain.tokens import TokenEstimator, content_tokens, estimate_tokens
from chatkeep.errors import ChatkeepError, ProviderError, ProviderTimeout, StorageError
from chatkeep.logs import truncate
from chatkeep.providers.base import ChatRequest, Chunk
from chatkeep.providers.registry import ProviderRegistry
from chatkeep.serialize import message_dict, message_json
from chatkeep.service.summaries import Summarizer
from chatkeep.storage.base import ReplyStart, Store
from chatkeep.streaming.registry import ReplyStreams
from chatkeep.streaming.reply_stream import ReplyStream, ReplyTooLong

logger = logging.getLogger("chatkeep.service.replies")

SHUTDOWN_REASON = "the server shut down while this reply was being generated"

#: A failure reason may quote a backend's answer; a log line keeps this much of one.
REASON_LOG_CHARS = 300

#: How many stored messages one context read fetches at a time.
CONTEXT_PAGE = 64


@dataclass(slots=True)
class SendResult:
    """A send in progress or replayed: the user message and its reply stream or answer."""

    start: ReplyStart
    stream: ReplyStream | None


class ConversationService:
    """Sends messages and runs their replies."""

    def __init__(
        self,
        *,
        store: Store,
        providers: ProviderRegistry,
        admission: AdmissionQueue,
        streams: ReplyStreams,
        stream_buffer_bytes: int,
        stream_idle_timeout: float,
        working_set: WorkingSet,
        summarizer: Summarizer | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.providers = providers
        self.admission = admission
        self.streams = streams
        self.stream_buffer_bytes = stream_buffer_bytes
        self.stream_idle_timeout = stream_idle_timeout
        self.working_set = working_set
        self.summarizer = summarizer
        self._clock = clock
        self._tasks: set[asyncio.Task[None]] = set()

    async def send(
        self,
        owner_id: str,
        conversation_id: str,
        *,
        content: str,
        client_message_id: str | None,
        priority: int = 0,
    ) -> SendResult:
        """Commit the user message and start its reply (or find the first send's result)."""
        if client_message_id is not None:
            # A retry must not wait in line or be refused for load: answer it from storage.
            replay = await self._replay(owner_id, conversation_id, client_message_id)
            if replay is not None:
                return replay
        await self.admission.acquire(priority)
        try:
            start = await self.store.begin_reply(
                owner_id, conversation_id, content=content, client_message_id=client_message_id
            )
        except BaseException:
            self.admission.release()
            raise
        if start.replayed:
            self.admission.release()
            return SendResult(start, self.streams.get(owner_id, conversation_id))
        self.working_set.record_messages(
            owner_id, conversation_id, start.conversation, start.user_message
        )
        stream = ReplyStream(
            reply_id=start.user_message.id,
            conversation_id=conversation_id,
            owner_id=owner_id,
            message_event=message_json(start.user_message),
            max_bytes=self.stream_buffer_bytes,
            clock=self._clock,
        )
        self.streams.add(stream)
        task = asyncio.create_task(
            self._generate(start.conversation, start.user_message, stream),
            name=f"reply-{conversation_id}",
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return SendResult(start, stream)

    async def _replay(
        self, owner_id: str, conversation_id: str, client_message_id: str
    ) -> SendResult | None:
        start = await self.store.find_send(owner_id, conversation_id, client_message_id)
        if start is None:
            return None
        stream = None
        if start.assistant_message is None:
            stream = self.streams.get(owner_id, conversation_id)
            if stream is not None and stream.reply_id != start.user_message.id:
                stream = None
        return SendResult(start, stream)

    async def _generate(
        self, conversation: Conversation, user_message: Message, stream: ReplyStream
    ) -> None:
        try:
            await self._generate_and_commit(conversation, user_message, stream)
        finally:
            self.admission.release()
            self.streams.mark_finished(stream)

    async def _generate_and_commit(
        self, conversation: Conversation, user_message: Message, stream: ReplyStream
    ) -> None:
        status: MessageStatus = "complete"
        reason: str | None = None
        error: ChatkeepError | None = None
        usage: Usage | None = None
        context: Context | None = None
        try:
            provider, config = self.providers.get(conversation.model)
            context = await self._context(
                conversation,
                user_message,
                config.context_tokens,
                self.providers.estimator(conversation.model),
            )
            request = ChatRequest(
                model=self.providers.upstream_model(conversation.model),
                messages=context.messages,
            )
            async with asyncio.timeout(config.timeout_seconds):
                async for chunk in _idle_bounded(
                    provider.stream(request), self.stream_idle_timeout
                ):
                    stream.append(chunk.text)
                    usage = chunk.usage or usage
            if usage is None:
                usage = Usage(context.tokens, estimate_tokens(stream.text))
        except ProviderError as exc:
            status, reason, error = "incomplete", exc.message, exc
        except ReplyTooLong as exc:
            status, reason = "incomplete", str(exc)
            error = ProviderError(str(exc))
        except IdleTimeout as exc:
            status, reason = "incomplete", str(exc)
            error = ProviderTimeout(reason)
        except TimeoutError:
            status, reason = "incomplete", "the model did not finish within its timeout"
            error = ProviderTimeout(reason)
        except asyncio.CancelledError:
            await asyncio.shield(
                self._commit(
                    conversation,
                    user_message,
                    stream,
                    "incomplete",
                    SHUTDOWN_REASON,
                    None,
                    ProviderError(SHUTDOWN_REASON),
                )
            )
            raise
        except ChatkeepError as exc:
            status, reason, error = "incomplete", exc.message, exc
        except Exception as exc:  # a bug must still close the reply, never leave it open
            logger.exception("reply generation failed")
            status, reason = "incomplete", f"internal error: {type(exc).__name__}"
            error = ChatkeepError(reason)
        if error is None and self.summarizer is not None and context is not None:
            self.summarizer.consider(conversation, context)
        if error is not None:
            logger.warning(
                "reply ended incomplete: %s",
                truncate(reason or "", REASON_LOG_CHARS),
                extra={"conversation_id": conversation.id, "model": conversation.model},
            )
        await self._commit(conversation, user_message, stream, status, reason, usage, error)

    async def _commit(
        self,
        conversation: Conversation,
        user_message: Message,
        stream: ReplyStream,
        status: MessageStatus,
        reason: str | None,
        usage: Usage | None,
        error: ChatkeepError | None,
    ) -> None:
        try:
            message = await self.store.finish_reply(
                conversation.owner_id,
                conversation.id,
                reply_to=user_message.id,
                content=stream.seal(),
                status=status,
                reason=reason,
                usage=usage,
            )
        except StorageError as exc:
            logger.error(
                "could not commit reply: %s",
                exc.message,
                extra={"conversation_id": conversation.id},
            )
            stream.finish("error", error_payload(exc), result=exc)
            return
        self.working_set.record_messages(
            conversation.owner_id, conversation.id, _after_reply(conversation, message), message
        )
        payload = message_dict(message)
        stream.error = error
        if error is None:
            stream.finish("done", payload, result=message)
        else:
            stream.finish("error", {**error_payload(error), "message": payload}, result=message)

    async def _context(
        self,
        conversation: Conversation,
        user_message: Message,
        budget: int,
        estimator: TokenEstimator = estimate_tokens,
    ) -> Context:
        """The bounded context: recent messages from the working set, older ones from storage."""
        entry = await self.working_set.get(conversation.owner_id, conversation.id)
        newest_first = [m for m in reversed(entry.messages) if m.seq <= user_message.seq]
        if not newest_first or newest_first[0].seq != user_message.seq:
            newest_first = [user_message]  # the entry lagged; the store has the truth
        tokens = _tokens_in(newest_first)
        oldest = newest_first[-1].seq
        # Page further back only while the budget is not spent and older messages exist.
        while tokens <= budget and oldest > conversation.summary_through_seq + 1:
            page = await self.store.recent_messages(
                conversation.owner_id, conversation.id, limit=CONTEXT_PAGE, before=oldest
            )
            if not page:
                break
            newest_first.extend(page)
            tokens += _tokens_in(page)
            oldest = page[-1].seq
        return build_context(
            system_prompt=conversation.system_prompt,
            summary=conversation.summary,
            summary_through_seq=conversation.summary_through_seq,
            newest_first=newest_first,
            budget_tokens=budget,
            estimator=estimator,
        )

    async def shutdown(self, grace_seconds: float) -> None:
        """Let running replies finish for ``grace_seconds``, then close them as incomplete."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=grace_seconds)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)

    @property
    def running_replies(self) -> int:
        return len(self._tasks)


class IdleTimeout(Exception):
    """The model sent nothing for longer than the stream idle timeout."""


async def _idle_bounded(chunks: AsyncIterator[Chunk], idle_seconds: float) -> AsyncIterator[Chunk]:
    """Relay ``chunks``, giving up when the model stays silent for ``idle_seconds``.

    A per-chunk `asyncio.timeout` would arm and cancel a timer for every token; instead
    one watchdog timer checks the time of the last chunk and re-arms itself, so a chunk
    costs one clock read.
    """
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    last = loop.time()
    fired = False
    handle: asyncio.TimerHandle | None = None

    def check() -> None:
        nonlocal fired, handle
        if loop.time() - last >= idle_seconds:
            fired = True
            task.cancel()
        else:
            handle = loop.call_at(last + idle_seconds, check)

    handle = loop.call_at(last + idle_seconds, check)
    iterator = aiter(chunks)
    try:
        async for chunk in iterator:
            last = loop.time()
            yield chunk
    except asyncio.CancelledError:
        if fired and task.uncancel() == 0:
            raise IdleTimeout(
                f"the model sent nothing for {idle_seconds:g} seconds; the reply was cut"
            ) from None
        raise
    finally:
        handle.cancel()
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            await aclose()


def _after_reply(conversation: Conversation, reply: Message) -> Conversation:
    """The conversation record as `finish_reply` left it, without reading it back."""
    usage = reply.usage or Usage()
    return replace(
        conversation,
        message_count=reply.seq,
        last_activity=reply.created_at,
        updated_at=reply.created_at,
        open_reply_to=None,
        usage=Usage(
            conversation.usage.prompt_tokens + usage.prompt_tokens,
            conversation.usage.completion_tokens + usage.completion_tokens,
        ),
    )


def _tokens_in(messages: list[Message]) -> int:
    return sum(content_tokens(m) for m in messages)


def error_payload(error: ChatkeepError) -> dict[str, Any]:
    """The JSON error body for ``error``."""
    return {"error": {"code": error.code, "message": error.message}}
