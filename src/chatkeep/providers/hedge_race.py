"""A pool's hedged attempt: the primary raced against a hedge on another backend.

A first token later than the hedge delay starts the same request on another healthy
backend; the first to send a token wins, the other is cancelled and its connection
closed. The time the loser waited still teaches its backend's health
(`BackendHealth.no_token_after`). When to hedge and how often is
`chatkeep.providers.hedging`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from chatkeep.providers.attempts import Finish, OpenedT, Reply, Won
from chatkeep.providers.backend import Backend
from chatkeep.providers.balancing import Balancer
from chatkeep.providers.health import BreakerState
from chatkeep.providers.hedging import HedgeBudget

#: One attempt on a backend, up to its first token (`ProviderPool._try`).
Attempt = Callable[[Backend], Coroutine[Any, Any, Won[OpenedT]]]


async def hedged(
    primary: Backend,
    delay: float,
    attempt: Attempt[OpenedT],
    target: Callable[[], Backend | None],
    finish: Finish,
    clock: Callable[[], float],
) -> Won[OpenedT]:
    """Race the primary against a hedge started after ``delay`` without a first token.

    ``target`` gives the hedge's backend (None: no hedge); ``finish`` ends an attempt
    that got a token but lost.
    """
    starts = [clock()]
    first = asyncio.ensure_future(attempt(primary))
    tasks = [first]
    hedge: Backend | None = None
    try:
        done, _ = await asyncio.wait(tasks, timeout=delay)
        if not done:
            hedge = target()
            if hedge is not None:
                starts.append(clock())
                tasks.append(asyncio.ensure_future(attempt(hedge)))
        winner = await _race(tasks)
    except BaseException:
        await _settle(tasks, None, finish)
        raise
    await _settle(tasks, winner, finish)
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


def hedge_target(
    backends: Sequence[Backend], reply: Reply, budget: HedgeBudget, balancer: Balancer
) -> Backend | None:
    """A healthy backend not yet tried for this reply, if the budget allows a hedge.

    A half-open backend may be one too: the hedge is its trial, and a ``Retry-After``
    breaker gets its trial even when balancing would not send it anything.
    """
    if any(b.breaker.state is BreakerState.OPEN for b in backends):
        return None  # a partial outage: the backends left must not get double load
    candidates = [
        b
        for b in backends
        if b not in reply.tried
        and b.usable()
        and (b.breaker.state is BreakerState.HALF_OPEN or b.health.state(b.breaker) == "healthy")
    ]
    if not candidates or not budget.spend():
        return None
    return balancer.choose(candidates)


async def _settle(
    tasks: Sequence[asyncio.Future[Won[OpenedT]]], winner: Won[OpenedT] | None, finish: Finish
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
            finish(won.backend, won.trial, None, False)


async def _race(tasks: Sequence[asyncio.Future[Won[OpenedT]]]) -> Won[OpenedT]:
    """The first attempt to get a token; the primary's error when every one failed."""
    pending = set(tasks)
    while pending:
        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            if task in done and not task.cancelled() and task.exception() is None:
                return task.result()
    return tasks[0].result()  # raises the primary's error
