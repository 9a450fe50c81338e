"""Active health checks, only for backends out of rotation.

Backends in rotation are judged by their real traffic (`chatkeep.providers.health`);
probing them too would only add load. A backend whose breaker opened after failures
gets no traffic, so nothing would ever tell the pool it came back: once its cooldown
is over, a cheap request (``GET /api/tags`` for Ollama, ``GET /v1/models`` for
OpenAI-compatible servers) asks. An answer lets one trial request through (half-open);
no answer, or a ``5xx``, starts another cooldown.

One task per pool does it, started when a breaker opens and ending by itself once no
backend is out; `aclose` cancels it. Tests call `probe_due` directly, with an injected
clock, instead of waiting for the task.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Protocol

from chatkeep.errors import ProviderError
from chatkeep.providers.health import BackendHealth, Breaker, BreakerState

logger = logging.getLogger("chatkeep.providers")


class Probed(Protocol):
    """What a prober needs of a backend."""

    @property
    def name(self) -> str: ...

    @property
    def breaker(self) -> Breaker: ...

    @property
    def health(self) -> BackendHealth: ...

    async def probe(self, timeout: float) -> None: ...  # noqa: ASYNC109


class Prober:
    """Probes a pool's backends whose cooldown is over, every ``interval`` seconds."""

    def __init__(
        self,
        model: str,
        backends: Sequence[Probed],
        *,
        interval: float,
        timeout: float,
        clock: Callable[[], float],
    ) -> None:
        self.model = model
        self._backends = backends
        self.interval = interval
        self.timeout = timeout
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.probes = 0

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def wake(self) -> None:
        """A breaker opened: make sure the task runs (inside the running loop)."""
        if self._closed or self.running:
            return
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"probe-{self.model}")

    async def probe_due(self) -> int:
        """Probe, at once, every backend whose cooldown is over; how many were probed."""
        due = [b for b in self._backends if b.breaker.needs_probe()]
        if due:
            await asyncio.gather(*(self._probe(backend) for backend in due))
        return len(due)

    async def _probe(self, backend: Probed) -> None:
        self.probes += 1
        try:
            await backend.probe(self.timeout)
        except ProviderError as exc:
            backend.breaker.probed(ok=False)
            backend.health.error(f"probe: {exc.message}", self._clock())
            return
        logger.info("model %s: backend %s answers again; one trial", self.model, backend.name)
        backend.breaker.probed(ok=True)

    def _out(self) -> bool:
        return any(b.breaker.state is BreakerState.OPEN for b in self._backends)

    async def _run(self) -> None:
        while self._out():
            await asyncio.sleep(self.interval)
            await self.probe_due()

    async def aclose(self) -> None:
        """Cancel the task and wait for it. Safe twice."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
