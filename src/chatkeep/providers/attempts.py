"""The pieces of one reply's attempts in a provider pool.

An attempt is "opened" once it has its first token: a stream with its first chunk
(`OpenStream`), or a relayed answer with its first bytes (`OpenRelay`). `Won` is the
attempt a reply goes on with; `PooledBody` relays the rest of a won answer and reports
its end to the pool.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from chatkeep.errors import ProviderError
from chatkeep.providers.backend import Backend
from chatkeep.providers.base import Chunk, PassthroughResponse

#: Called once at the end of a won attempt: (backend, trial, error, ok).
Finish = Callable[[Backend, bool, ProviderError | None, bool], None]


class Opened(Protocol):
    """An attempt that got its first token; `discard` closes it unread."""

    async def discard(self) -> None: ...


OpenedT = TypeVar("OpenedT", bound=Opened)
Opener = Callable[[Backend], Awaitable[OpenedT]]


@dataclass(slots=True)
class OpenStream:
    """A reply stream with its first chunk read (None: it ended without one)."""

    stream: AsyncIterator[Chunk]
    first: Chunk | None

    async def discard(self) -> None:
        await aclose_quietly(self.stream)


@dataclass(slots=True)
class OpenRelay:
    """A relayed answer with its first bytes read (None for an error answer's body)."""

    answer: PassthroughResponse
    first: bytes | None

    async def discard(self) -> None:
        await aclose_quietly(self.answer.body)


@dataclass(slots=True)
class Won(Generic[OpenedT]):
    """The attempt a reply goes on with; ``trial``: it is its breaker's half-open trial."""

    backend: Backend
    opened: OpenedT
    trial: bool


class Reply:
    """One reply's retry state: deadline (pool's clock), backends tried, their failures.

    ``failures`` holds at most one error per attempt, so it is bounded by ``attempts``
    and the hedges.
    """

    __slots__ = ("deadline", "failures", "tried")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.tried: list[Backend] = []
        self.failures: list[ProviderError] = []


class PooledBody:
    """A relayed answer's body: its first bytes, then the rest; reports its end to the pool."""

    def __init__(self, won: Won[OpenRelay], finish: Finish) -> None:
        self._finish = finish
        self._won = won
        self._first = won.opened.first
        self._body = won.opened.answer.body
        self._client_error = won.opened.answer.status >= 400
        self._done = False

    def __aiter__(self) -> PooledBody:
        return self

    async def __anext__(self) -> bytes:
        if self._first is not None:
            first, self._first = self._first, None
            return first
        if self._done:
            raise StopAsyncIteration
        try:
            return await anext(self._body)
        except StopAsyncIteration:
            self._end(None, ok=not self._client_error)
            raise
        except ProviderError as exc:
            self._end(exc, ok=False)
            raise
        except BaseException:
            self._end(None, ok=False)
            raise

    async def aclose(self) -> None:
        self._first = None
        await aclose_quietly(self._body)
        self._end(None, ok=False)

    def _end(self, error: ProviderError | None, *, ok: bool) -> None:
        if not self._done:
            self._done = True
            won = self._won
            self._finish(won.backend, won.trial, error, ok)


async def aclose_quietly(iterator: AsyncIterator[object]) -> None:
    """Close an async iterator that has an ``aclose`` (generators, relayed bodies)."""
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        await aclose()


async def read_some(body: AsyncIterator[bytes], limit: int) -> bytes:
    """Up to about ``limit`` bytes of ``body`` (for an error message)."""
    read = b""
    async for chunk in body:
        read += chunk
        if len(read) >= limit:
            break
    return read[:limit]
