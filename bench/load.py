"""What one load run measured, and the interface the two load generators share.

`wrk` (in C, when installed) is the generator of choice: it costs the machine far less per
request than any Python client, so what is measured is the server, not the client. The
soak engine (`chatkeep.soak.run_soak`) is the fallback, and it also measures what wrk cannot:
the time to the first token of a stream.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True, slots=True)
class LoadResult:
    """Throughput and latency of one closed-loop run."""

    generator: str
    requests: int
    """Requests answered in the run (errors included)."""
    errors: int
    seconds: float
    latency_ms: dict[str, float]
    """``mean``, ``p50``, ``p90``, ``p99`` and ``max``."""
    error_detail: dict[str, int] = field(default_factory=dict)
    ttft_ms: dict[str, float] | None = None
    """Time to first token, for streams measured by a client that reads them."""

    @property
    def throughput(self) -> float:
        """Successful requests per second."""
        return (self.requests - self.errors) / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["throughput_rps"] = round(self.throughput, 1)
        return data


@dataclass(frozen=True, slots=True)
class Conversations:
    """Conversations made before a durable run, listed one id a line in ``path``."""

    path: Path
    count: int
    per_conversation: int
    """Sends to one conversation before the lane moves on to its next one."""
    model: str


class LoadGenerator(Protocol):
    """Applies closed-loop load for a fixed time."""

    name: str

    def passthrough(
        self, base_url: str, *, model: str, stream: bool, concurrency: int, seconds: float
    ) -> LoadResult:
        """``POST /v1/chat/completions`` with the same small request, again and again."""
        ...

    def durable(
        self,
        base_url: str,
        conversations: Conversations,
        *,
        stream: bool,
        concurrency: int,
        seconds: float,
    ) -> LoadResult:
        """``POST /api/conversations/{id}/messages`` on chatkeep, one lane per connection."""
        ...
