"""The one generation pipeline: (response cache) → admission → provider → the caller's sink.

Both the durable send and the stateless ``/v1`` passthrough go through here, so what a
generation must pass (admission, a response cache, rate limits by owner) lands once:

* `admit` takes an admission slot (or raises `Overloaded`: 503 with ``Retry-After``); the
  holder gives it back with `Slot.release`, exactly once, when the backend is done;
* `pieces` streams a model's reply, with the idle bound between pieces;
* `relay` hands an OpenAI-shaped body to a provider that relays it byte for byte.

The sinks differ: the durable send publishes pieces into the reply hub and commits the
result; the passthrough writes them to its HTTP response.

Both also note how long their request waited on the backend (`BackendWait`), so that the
metrics can tell the gateway's own time from the model's.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from chatkeep.admission.queue import AdmissionQueue
from chatkeep.errors import ProviderTimeout, ShuttingDown
from chatkeep.providers.base import ChatRequest, Chunk, PassthroughResponse
from chatkeep.providers.registry import ProviderRegistry


class BackendWait:
    """When a request's model call began and when its backend's last byte came.

    The metrics middleware makes one per request and sets it in `BACKEND_WAIT`; a
    generation task started by the request runs in a copy of its context, so the durable
    send's reply notes its call here too. Only the first call counts (a request makes one
    model call). Two clock reads per call, none per piece: the span from the call to the
    last byte is the backend's, work between two pieces included, since with a model
    that paces its tokens that work overlaps the backend's own pace.
    """

    __slots__ = ("_clock", "began", "ended")

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.began: float | None = None
        self.ended: float | None = None

    def begin(self) -> None:
        """The model call starts now (ignored after the first)."""
        if self.began is None:
            self.began = self._clock()

    def end(self) -> None:
        """The backend's answer is complete, or given up (ignored when not waiting)."""
        if self.began is not None and self.ended is None:
            self.ended = self._clock()

    def seconds(self, now: float) -> float | None:
        """Time spent waiting on the backend up to ``now``; ``None`` when nothing was called.

        A call still open at ``now`` (a client that left while the reply goes on) counts
        up to ``now``: the request's time since the call was all the backend's.
        """
        if self.began is None:
            return None
        return (self.ended if self.ended is not None else now) - self.began


#: The current request's `BackendWait`; ``None`` outside a request (tests, summaries).
BACKEND_WAIT: contextvars.ContextVar[BackendWait | None] = contextvars.ContextVar(
    "chatkeep_backend_wait", default=None
)


def backend_called() -> None:
    """Note that the current request's model call starts now."""
    wait = BACKEND_WAIT.get()
    if wait is not None:
        wait.begin()


def backend_done() -> None:
    """Note that the current request's backend has sent its last byte."""
    wait = BACKEND_WAIT.get()
    if wait is not None:
        wait.end()


class Slot:
    """One admission slot; `release` gives it back once, later calls do nothing."""

    __slots__ = ("_admission", "_held")

    def __init__(self, admission: AdmissionQueue) -> None:
        self._admission = admission
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._admission.release()

    async def aclose(self) -> None:
        """`release`, as a callback a streamed response awaits when it closes."""
        self.release()


class Stoppable:
    """Stateless generations in flight, which a server stop ends early.

    A durable reply is stopped by its own service (and stored); a ``/v1`` answer has no
    store behind it, so at the end of the shutdown grace the tasks serving one are
    cancelled, and each, seeing it was `stopped`, ends its answer properly (a final error
    event, or a ``503``) instead of being cut when the server closes its connections.
    """

    def __init__(self) -> None:
        self._tasks: dict[asyncio.Task[Any], bool] = {}

    @contextlib.contextmanager
    def guard(self) -> Iterator[Callable[[], bool]]:
        """Register the current task; yields whether the stop has cancelled it."""
        task = asyncio.current_task()
        assert task is not None
        self._tasks[task] = False
        try:
            yield lambda: self._tasks.get(task, False)
        finally:
            self._tasks.pop(task, None)

    def stop(self) -> None:
        """Cancel every registered task, marked as stopped."""
        for task in list(self._tasks):
            if not self._tasks[task]:
                self._tasks[task] = True
                task.cancel()


class GenerationPipeline:
    """Admission and model calls, shared by every surface that generates text."""

    def __init__(
        self,
        *,
        providers: ProviderRegistry,
        admission: AdmissionQueue,
        idle_timeout: float,
    ) -> None:
        self.providers = providers
        self.admission = admission
        self.idle_timeout = idle_timeout
        #: Stateless generations (``/v1``), ended early when the server stops.
        self.stateless = Stoppable()

    def stop_admitting(self) -> None:
        """The server is stopping: every generation not yet admitted gets `ShuttingDown`."""
        self.admission.close(
            lambda: ShuttingDown("the server is shutting down; retry on another instance")
        )

    async def admit(self, priority: int = 0, owner: str | None = None) -> Slot:
        """Wait for a generation slot (lower ``priority`` first) or raise `Overloaded`.

        ``owner`` waits within its share of the line (`RateLimited`, a 429, beyond it).
        """
        await self.admission.acquire(priority, owner)
        return Slot(self.admission)

    def pieces(
        self, model: str, messages: list[dict[str, str]], options: dict[str, Any] | None = None
    ) -> AsyncIterator[Chunk]:
        """The reply of ``model`` to ``messages``, piece by piece.

        Each gap between pieces is bounded by the idle timeout (`ProviderTimeout`); the
        whole reply is bounded by the provider, which owns the model's timeout (its
        retries must fit in it). A provider failure raises its `ProviderError`; an
        unknown model raises `UnknownModel` here, before anything is iterated.

        Not a generator of its own: the bounded stream is handed over as it is, so a
        piece passes one generator less on its way (measured: 0.35 µs a piece).
        """
        route = self.providers.route(model)
        request = ChatRequest(messages=messages, options=options or {})
        return _idle_bounded(route.provider.stream(request), self.idle_timeout)

    async def relay(self, model: str, body: bytes) -> PassthroughResponse:
        """Relay an OpenAI chat-completions body to ``model``'s backend unchanged.

        The provider puts its backend's name for the model in, when that differs. The
        caller calls `backend_done` once the body has been read.
        """
        backend_called()
        return await self.providers.route(model).provider.passthrough(body)


async def _idle_bounded(chunks: AsyncIterator[Chunk], idle_seconds: float) -> AsyncIterator[Chunk]:
    """Relay ``chunks``, giving up when the model stays silent for ``idle_seconds``.

    A per-piece `asyncio.timeout` would arm and cancel a timer for every token; instead
    one watchdog timer re-arms itself, so a piece costs a clock read and two stores. The
    watchdog cancels the task only while it waits here for the model: a consumer busy
    with something else between pieces (writing to its client) is never cancelled in
    the middle of that; the bound is checked again when it asks for the next piece.
    """
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    last = loop.time()
    waiting = False
    fired = False
    handle: asyncio.TimerHandle | None = None

    def due() -> float:
        return last + idle_seconds

    def check() -> None:
        nonlocal fired, handle
        handle = None
        if not waiting:
            return  # re-armed when the consumer asks for the next piece
        if loop.time() >= due():
            fired = True
            task.cancel()
        else:
            handle = loop.call_at(due(), check)

    def expired() -> ProviderTimeout:
        return ProviderTimeout(
            f"the model sent nothing for {idle_seconds:g} seconds; the reply was cut"
        )

    iterator = aiter(chunks)
    backend_called()
    try:
        while True:
            if loop.time() >= due():
                raise expired()
            waiting = True
            if handle is None:
                handle = loop.call_at(due(), check)
            try:
                chunk = await anext(iterator)
            except StopAsyncIteration:
                return
            finally:
                waiting = False
            last = loop.time()
            yield chunk
    except asyncio.CancelledError:
        if fired and task.uncancel() == 0:
            raise expired() from None
        raise
    finally:
        backend_done()
        if handle is not None:
            handle.cancel()
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            await aclose()
