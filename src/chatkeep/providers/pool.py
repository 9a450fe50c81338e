"""A provider made of several backends: balancing, health, failover, retries and hedging.

`ProviderPool` is a `Provider` like any other, so the durable send, the ``/v1``
passthrough and summaries all get it. One reply through it:

1. the balancer (`chatkeep.providers.balancing`) picks a backend among those whose
   breaker lets requests through and that are under their in-flight bound, preferring
   those not yet tried for this reply; when every backend in rotation is at its bound,
   the reply waits for an attempt to end, within its deadline, and past it is refused
   with `Overloaded` (``503`` with ``Retry-After``), never with a ``502``
   (`chatkeep.providers.slots`);
2. the attempt runs until its first token (a streamed piece; for a relayed stream, its
   first event with content, `chatkeep.providers.first_token`), bounded by the
   backend's ``attempt_timeout_seconds`` and by what is left of the reply's total
   deadline (``timeout_seconds``), which also bounds the rest of the answer
   (`chatkeep.providers.http.attempt_limit`);
3. with hedging on, a first token later than the hedge delay starts the same request
   on another healthy backend; the first to send a token wins, the other is cancelled
   and its connection closed (`chatkeep.providers.hedge_race`); the time the loser waited
   still teaches its backend's health (`BackendHealth.no_token_after`);
4. a retryable failure before the first token is tried again, elsewhere when it can
   (`chatkeep.providers.retrying`); after the first token nothing is retried: a
   broken stream ends the reply with its error, and the reply is stored incomplete;
5. every attempt's outcome feeds its backend's health and breaker
   (`chatkeep.providers.health`), and a breaker opening after failures wakes the
   prober (`chatkeep.providers.probing`);
6. a reply that every attempt's backend refused with ``429`` or ``503`` (or that finds
   every backend out for a ``Retry-After``) fails with `RateLimited` (``429``) or
   `Overloaded` (``503``) carrying the smallest ``Retry-After`` given, so its client
   knows when to come back, rather than with a ``502`` (`chatkeep.providers.refusal`).

Cost: a one-backend pool without hedging adds about 4.5 µs of CPU to a reply in
process (measured against the bare provider over a no-network member, CPython 3.11,
medians of 15 rounds: a relayed JSON answer 1.1 → 5.6 µs, a 16-piece stream 6.3 → 11.5
µs, a relayed 16-event SSE stream 3.5 → 14.5 µs, about 5 µs of which is finding its
first token), mostly four awaited coroutine frames, the relay's own layer per chunk and
the health bookkeeping. In a running server under load a profiler put 5 to 12 µs per
request in the pool's frames, and the process's CPU per request moved by more
(docs/benchmarks.md, "Provider pool"): plan with those. The first attempt sets no timer
of its own (its provider's timeout is the deadline) and tenacity is not entered.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

from chatkeep.errors import ProviderError, ProviderTimeout
from chatkeep.providers.attempts import (
    OpenedT,
    Opener,
    OpenRelay,
    OpenStream,
    PooledBody,
    Reply,
    Won,
    aclose_quietly,
    read_some,
)
from chatkeep.providers.backend import Backend, build_backend
from chatkeep.providers.balancing import Balancer
from chatkeep.providers.base import ChatRequest, Chunk, PassthroughResponse, Provider
from chatkeep.providers.first_token import read_first_token
from chatkeep.providers.health import BACKEND_FAULT_STATUSES
from chatkeep.providers.hedge_race import hedge_target, hedged
from chatkeep.providers.hedging import ADAPTIVE_PERCENTILE, HedgeBudget, hedge_delay
from chatkeep.providers.http import EXCERPT_BYTES, HTTPProvider, attempt_limit, status_error
from chatkeep.providers.probing import Prober
from chatkeep.providers.refusal import refused
from chatkeep.providers.retrying import RetryPolicy, counts_against_backend, retryable
from chatkeep.providers.slots import NoBackendAvailable, Slots
from chatkeep.settings import ModelConfig


class ProviderPool(Provider):
    """A model served by several backends (see the module docstring).

    ``clock`` times breakers, health and deadlines; ``sleep`` waits between retries.
    Tests pass a fake clock and a sleep that advances it.
    """

    def __init__(
        self,
        model: str,
        config: ModelConfig,
        backends: Sequence[Backend],
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not backends:
            raise ValueError(f"model {model!r}: a pool needs at least one backend")
        self.model = model
        self.config = config
        self.backends = list(backends)
        self.supports_passthrough = all(b.provider.supports_passthrough for b in backends)
        self._clock = clock
        self._timeout = config.timeout_seconds
        self._balancer = Balancer(config.balancing)
        self._retry = RetryPolicy(
            attempts=config.attempts,
            backoff=config.retry_backoff_seconds,
            backoff_max=config.retry_backoff_max_seconds,
            clock=clock,
            sleep=sleep,
        )
        self._hedge_after = config.hedge_after_ms
        self.budget = HedgeBudget(config.hedge_budget)
        self.prober = Prober(
            model,
            self.backends,
            interval=config.probe_interval_seconds,
            timeout=config.probe_timeout_seconds,
            clock=clock,
        )
        self.retries = 0
        self._slots = Slots(model, self.backends, self._balancer, clock)

    @property
    def clock(self) -> Callable[[], float]:
        """The pool's clock (breakers, health, deadlines)."""
        return self._clock

    async def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        async def open_stream(backend: Backend) -> OpenStream:
            stream = backend.provider.stream(request)
            try:
                return OpenStream(stream, await anext(stream))
            except StopAsyncIteration:
                return OpenStream(stream, None)
            except BaseException:
                await aclose_quietly(stream)
                raise

        won = await self._first_token(open_stream)
        opened = won.opened
        error: ProviderError | None = None
        ok = False
        try:
            if opened.first is not None:
                yield opened.first
                async for chunk in opened.stream:
                    yield chunk
            ok = True
        except ProviderError as exc:
            error = exc  # after the first token: never retried, the reply ends with it
            raise
        finally:
            await aclose_quietly(opened.stream)
            self._finish(won.backend, won.trial, error, ok=ok)

    async def passthrough(self, body: bytes) -> PassthroughResponse:
        """Relay ``body`` to one backend; ``429``/``5xx`` answers are retried like errors.

        So are ``401``, ``403`` and ``404``: this backend's key or model is wrong
        (`BACKEND_FAULT_STATUSES`). Any other status is relayed as it is (a ``4xx`` is
        the client's to read). Once
        the answer's first token is in (a stream's first event with content, a JSON
        answer's first bytes: `chatkeep.providers.first_token`), it is this backend's,
        to its end; what was read to find it is relayed first, unchanged.
        """

        async def open_relay(backend: Backend) -> OpenRelay:
            answer = await backend.provider.passthrough(body)
            try:
                status = answer.status
                if status == 429 or status >= 500 or status in BACKEND_FAULT_STATUSES:
                    head = await read_some(answer.body, EXCERPT_BYTES)
                    raise status_error(
                        answer.status, head, answer.retry_after, backend.provider.label
                    )
                if answer.status >= 400:
                    return OpenRelay(answer, None)
                first = await read_first_token(
                    answer.body, answer.content_type, backend.provider.label
                )
                return OpenRelay(answer, first)
            except BaseException:
                await aclose_quietly(answer.body)
                raise

        won = await self._first_token(open_relay)
        answer = won.opened.answer
        return PassthroughResponse(
            status=answer.status,
            content_type=answer.content_type,
            body=PooledBody(won, self._finish),
            retry_after=answer.retry_after,
        )

    # -- one reply's attempts ------------------------------------------------------------

    async def _first_token(self, opener: Opener[OpenedT]) -> Won[OpenedT]:
        """Attempts until one gets its first token, within the rules of `retrying`."""
        reply = Reply(self._clock() + self._timeout)
        if self._hedge_after is not None:
            self.budget.earn()
        try:
            return await self._round(reply, opener)
        except ProviderError as exc:
            # Not retried: attempts of 1, an error of the request, or every backend out
            # (nothing was tried: fail at once rather than wait through an outage).
            if (
                self._retry.attempts == 1
                or not retryable(exc)
                or (isinstance(exc, NoBackendAvailable) and not exc.busy)
            ):
                refusal = refused(self.model, self.config, reply, exc)
                if refusal is None:
                    raise
                raise refusal from exc
            failure: ProviderError | None = exc
        try:
            async for attempt in self._retry.retrying(
                reply.deadline, lambda: self._slots.waits(reply)
            ):
                with attempt:
                    if failure is not None:
                        replayed, failure = failure, None
                        raise replayed
                    self.retries += 1
                    return await self._round(reply, opener)
        except ProviderError as exc:
            refusal = refused(self.model, self.config, reply, exc)
            if refusal is None:
                raise
            raise refusal from exc
        raise AssertionError("unreachable: the retry loop re-raises the last error")

    async def _round(self, reply: Reply, opener: Opener[OpenedT]) -> Won[OpenedT]:
        primary = await self._slots.choose(reply)
        setting = self._hedge_after
        if setting is not None:
            learnt = (
                primary.health.ttft_percentile(ADAPTIVE_PERCENTILE)
                if setting == "adaptive"
                else None
            )
            delay = hedge_delay(setting, learnt)
            if delay is not None:
                return await hedged(
                    primary,
                    delay,
                    lambda backend: self._try(backend, reply, opener),
                    lambda: hedge_target(self.backends, reply, self.budget, self._balancer),
                    self._finish,
                    self._clock,
                )
        return await self._try(primary, reply, opener)

    async def _try(self, backend: Backend, reply: Reply, opener: Opener[OpenedT]) -> Won[OpenedT]:
        """One attempt on ``backend``, up to its first token."""
        health = backend.health
        health.inflight += 1
        health.requests += 1
        trial = backend.breaker.begin()
        tried = reply.tried
        # The first attempt starts with the deadline, which its provider's own timeout
        # already is; a later one is given what is left of it.
        started = self._clock()
        left = reply.deadline - started
        token = attempt_limit.set(left) if tried else None
        tried.append(backend)
        limit = backend.attempt_timeout
        try:
            if limit is not None and limit < left:
                async with asyncio.timeout(limit):
                    opened = await opener(backend)
            else:
                opened = await opener(backend)
        except TimeoutError:
            timeout = ProviderTimeout(
                f"{backend.provider.label}: no first token within {limit:g} s"
            )
            self._finish(backend, trial, timeout, ok=False)
            reply.failures.append(timeout)
            raise timeout from None
        except ProviderError as exc:
            self._finish(backend, trial, exc, ok=False)
            reply.failures.append(exc)
            raise
        except BaseException:
            self._finish(backend, trial, None, ok=False)
            raise
        finally:
            if token is not None:
                attempt_limit.reset(token)
        health.first_token(self._clock() - started)
        return Won(backend, opened, trial)

    def _finish(self, backend: Backend, trial: bool, error: ProviderError | None, ok: bool) -> None:
        """The end of an attempt: its outcome goes to the backend's health and breaker."""
        health = backend.health
        health.inflight -= 1
        slots = self._slots
        if slots.waiting:
            slots.wake()
        breaker = backend.breaker
        if ok:
            health.outcome(True)
            breaker.succeeded(trial)
        elif error is None:
            breaker.abandoned(trial)  # its caller left: no verdict on the backend
        elif counts_against_backend(error):
            health.outcome(False)
            health.error(error.message, self._clock())
            if breaker.failed(error, trial) and not breaker.told:
                self.prober.wake()
        else:
            breaker.succeeded(trial)  # it answered (a 4xx): up, whatever the request was

    async def aclose(self) -> None:
        """Stop probing and close each backend's provider. Safe twice."""
        await self.prober.aclose()
        for backend in self.backends:
            await backend.provider.aclose()


def build_pool(
    name: str,
    config: ModelConfig,
    providers: Sequence[HTTPProvider],
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> ProviderPool:
    """The pool of model ``name``: one backend per ``config.backends``, in order."""
    backends = [
        build_backend(backend_name, provider, config, backend, clock)
        for backend_name, provider, backend in zip(
            config.backend_names(), providers, config.backends, strict=True
        )
    ]
    return ProviderPool(name, config, backends, clock=clock, sleep=sleep)
