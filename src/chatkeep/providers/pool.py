"""A provider made of several backends: balancing, health, failover, retries and hedging.

`ProviderPool` is a `Provider` like any other, so the durable send, the ``/v1``
passthrough and summaries all get it. One reply through it:

1. the balancer (`chatkeep.providers.balancing`) picks a backend among those whose
   breaker lets requests through and that are under their in-flight bound, preferring
   those not yet tried for this reply; when every backend in rotation is at its bound,
   the reply waits for an attempt to end, within its deadline, and past it is refused
   with `Overloaded` (``503`` with ``Retry-After``), never with a ``502``;
2. the attempt runs until its first token (a streamed piece; for a relayed stream, its
   first event with content, `chatkeep.providers.first_token`), bounded by the
   backend's ``attempt_timeout_seconds`` and by what is left of the reply's total
   deadline (``timeout_seconds``), which also bounds the rest of the answer
   (`chatkeep.providers.http.attempt_limit`);
3. with hedging on, a first token later than the hedge delay starts the same request
   on another healthy backend; the first to send a token wins, the other is cancelled
   and its connection closed (`chatkeep.providers.hedging`); the time the loser waited
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
   knows when to come back, rather than with a ``502`` (`ProviderPool._refused`).

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

from chatkeep.errors import (
    Overloaded,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
)
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
from chatkeep.providers.health import BACKEND_FAULT_STATUSES, BreakerState
from chatkeep.providers.hedging import ADAPTIVE_PERCENTILE, HedgeBudget, hedge_delay
from chatkeep.providers.http import EXCERPT_BYTES, HTTPProvider, attempt_limit, status_error
from chatkeep.providers.probing import Prober
from chatkeep.providers.retrying import RetryPolicy, counts_against_backend, retryable
from chatkeep.settings import ModelConfig


class NoBackendAvailable(ProviderUnavailable):
    """No backend of a model can take a request now.

    ``busy``: some are in rotation but at their in-flight bound (the pool waits for a
    free slot, `ProviderPool._choose`); otherwise every one is out of rotation, and
    ``retry_after`` says for how long when a backend said so.
    """

    busy = False


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
        #: Replies waiting for a free slot, and what wakes them: set (then replaced) when
        #: an attempt ends. Counted so that an attempt's end costs nothing when none waits.
        self._waiting = 0
        self._freed = asyncio.Event()
        # A wait for a slot is bounded by the attempt timeout too, when every backend has one.
        limits = [b.attempt_timeout for b in self.backends]
        self._slot_wait_max = (
            None if None in limits else max(limit for limit in limits if limit is not None)
        )

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
                refused = self._refused(reply, exc)
                if refused is None:
                    raise
                raise refused from exc
            failure: ProviderError | None = exc
        try:
            async for attempt in self._retry.retrying(reply.deadline, lambda: self._waits(reply)):
                with attempt:
                    if failure is not None:
                        replayed, failure = failure, None
                        raise replayed
                    self.retries += 1
                    return await self._round(reply, opener)
        except ProviderError as exc:
            refused = self._refused(reply, exc)
            if refused is None:
                raise
            raise refused from exc
        raise AssertionError("unreachable: the retry loop re-raises the last error")

    def _refused(self, reply: Reply, error: ProviderError) -> Overloaded | None:
        """The answer for a reply refused by rate limits or overload, None for other failures.

        A ``429`` or ``503`` from every attempt says "later", not "broken": the client
        gets ``429`` (all were ``429``) or ``503``, with the smallest ``Retry-After`` a
        backend gave (or the breaker cooldown when none gave one). So does a reply
        finding every backend out for a ``Retry-After`` it was given before.
        """
        failures = reply.failures
        waits = [f.retry_after for f in failures if f.retry_after is not None]
        if isinstance(error, NoBackendAvailable):
            if error.busy or error.retry_after is None:
                return None
            waits.append(error.retry_after)
        elif not failures:
            return None
        statuses = {f.upstream_status for f in failures}
        if not statuses <= {429, 503}:
            return None
        config = self.config
        retry_after = min(min(waits), config.max_retry_after_seconds) if waits else None
        if retry_after is None:
            retry_after = config.breaker_cooldown_seconds
        message = f"model {self.model!r}: every backend tried is busy ({error.message})"
        if statuses == {429}:
            return RateLimited(message, retry_after=retry_after)
        return Overloaded(message, retry_after=retry_after)

    async def _round(self, reply: Reply, opener: Opener[OpenedT]) -> Won[OpenedT]:
        primary = await self._choose(reply)
        setting = self._hedge_after
        if setting is not None:
            learnt = (
                primary.health.ttft_percentile(ADAPTIVE_PERCENTILE)
                if setting == "adaptive"
                else None
            )
            delay = hedge_delay(setting, learnt)
            if delay is not None:
                return await self._hedged(primary, delay, reply, opener)
        return await self._try(primary, reply, opener)

    async def _choose(self, reply: Reply) -> Backend:
        """`_pick`, waiting for a free slot while every backend in rotation is busy.

        The wait is not an attempt (it uses none of ``attempts``): a busy pool is not a
        failing one. It is bounded by what is left of the reply's deadline, and by the
        attempt timeout when every backend has one; past that the reply is refused with
        `Overloaded` (``503``, ``Retry-After``) so its client knows to come back.
        """
        until: float | None = None
        while True:
            try:
                return self._pick(reply)
            except NoBackendAvailable as exc:
                if not exc.busy:
                    raise
                busy = exc
            now = self._clock()
            if until is None:
                cap = self._slot_wait_max
                until = reply.deadline if cap is None else min(reply.deadline, now + cap)
            left = until - now
            if left <= 0:
                raise Overloaded(f"{busy.message}; no slot freed in time", retry_after=1.0)
            freed = self._freed
            self._waiting += 1
            try:
                async with asyncio.timeout(left):
                    await freed.wait()
            except TimeoutError:
                raise Overloaded(
                    f"{busy.message}; no slot freed in time", retry_after=1.0
                ) from None
            finally:
                self._waiting -= 1

    def _pick(self, reply: Reply) -> Backend:
        backends = self.backends
        if len(backends) == 1:
            only = backends[0]
            if only.usable():
                return only
            raise self._none_available()
        usable = [b for b in backends if b.usable()]
        fresh = [b for b in usable if b not in reply.tried] if reply.tried else usable
        if not (fresh or usable):
            raise self._none_available()
        return self._balancer.choose(fresh or usable)

    def _none_available(self) -> NoBackendAvailable:
        backends = self.backends
        if any(b.breaker.allows() for b in backends):
            busy = NoBackendAvailable(
                f"model {self.model!r}: every backend is at its in-flight bound "
                f"({sum(b.max_inflight for b in backends)} requests)"
            )
            busy.busy = True
            return busy
        reopens = [
            s
            for b in backends
            if b.breaker.state is BreakerState.OPEN and (s := b.breaker.reopens_in()) is not None
        ]
        soonest = min(reopens) if reopens else None
        when = "until a probe answers" if soonest is None else f"for {soonest:.1f} s"
        return NoBackendAvailable(
            f"model {self.model!r}: every backend is out of rotation ({when})",
            retry_after=soonest,
        )

    def _waits(self, reply: Reply) -> float | None:
        """What the retry loop may do now; see `RetryPolicy.retrying`."""
        usable = [b for b in self.backends if b.usable()]
        if any(b not in reply.tried for b in usable):
            return 0.0
        if usable or any(b.breaker.state is not BreakerState.OPEN for b in self.backends):
            return -1.0  # tried ones only, or all busy: back off, then go again
        reopens = [s for b in self.backends if (s := b.breaker.reopens_in()) is not None]
        return min(reopens) if reopens else None

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

    async def _hedged(
        self, primary: Backend, delay: float, reply: Reply, opener: Opener[OpenedT]
    ) -> Won[OpenedT]:
        """Race the primary against a hedge started after ``delay`` without a first token."""
        clock = self._clock
        starts = [clock()]
        first = asyncio.ensure_future(self._try(primary, reply, opener))
        tasks = [first]
        hedge: Backend | None = None
        try:
            done, _ = await asyncio.wait(tasks, timeout=delay)
            if not done:
                hedge = self._hedge_target(reply)
                if hedge is not None:
                    starts.append(clock())
                    tasks.append(asyncio.ensure_future(self._try(hedge, reply, opener)))
            winner = await _race(tasks)
        except BaseException:
            await self._settle(tasks, None)
            raise
        await self._settle(tasks, winner)
        if hedge is not None:
            # A loser cut off without a token waited at least this long for one. Kept
            # only past the delay: the hedged-away primary, whose slowness is what the
            # percentile must see; a hedge cut short sooner says nothing about its tail.
            now = clock()
            for task, backend, started in zip(tasks, (primary, hedge), starts, strict=True):
                if task.cancelled() and now - started >= delay:
                    backend.health.no_token_after(now - started)
            if winner.backend is hedge:
                hedge.health.hedges_won += 1
            else:
                hedge.health.hedges_lost += 1
        return winner

    def _hedge_target(self, reply: Reply) -> Backend | None:
        """A healthy backend not yet tried for this reply, if the budget allows a hedge.

        A half-open backend may be one too: the hedge is its trial, and a ``Retry-After``
        breaker gets its trial even when balancing would not send it anything.
        """
        backends = self.backends
        if any(b.breaker.state is BreakerState.OPEN for b in backends):
            return None  # a partial outage: the backends left must not get double load
        candidates = [
            b
            for b in backends
            if b not in reply.tried
            and b.usable()
            and (
                b.breaker.state is BreakerState.HALF_OPEN or b.health.state(b.breaker) == "healthy"
            )
        ]
        if not candidates or not self.budget.spend():
            return None
        return self._balancer.choose(candidates)

    async def _settle(
        self, tasks: Sequence[asyncio.Future[Won[OpenedT]]], winner: Won[OpenedT] | None
    ) -> None:
        """Cancel the attempts still running and close those that got a token unused.

        A cancelled attempt closes its own stream, and with it the connection (an answer
        cut short is never returned to the pool). Run for the losers, and for every
        attempt when the caller itself was cancelled.
        """
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for task in tasks:
            if task.cancelled() or task.exception() is not None:
                continue
            won = task.result()
            if won is not winner:
                await won.opened.discard()
                self._finish(won.backend, won.trial, None, ok=False)

    def _finish(self, backend: Backend, trial: bool, error: ProviderError | None, ok: bool) -> None:
        """The end of an attempt: its outcome goes to the backend's health and breaker."""
        health = backend.health
        health.inflight -= 1
        if self._waiting:
            # Wake every waiting reply: each picks again, and those that find no slot
            # wait again on the next event.
            freed, self._freed = self._freed, asyncio.Event()
            freed.set()
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


async def _race(tasks: Sequence[asyncio.Future[Won[OpenedT]]]) -> Won[OpenedT]:
    """The first attempt to get a token; the primary's error when every one failed."""
    pending = set(tasks)
    while pending:
        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            if task in done and not task.cancelled() and task.exception() is None:
                return task.result()
    return tasks[0].result()  # raises the primary's error


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
