"""What the fake backend does: its reply length, its pace and the faults it injects."""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass


class Fault(enum.Enum):
    """What one request gets instead of (or on top of) a normal answer."""

    NONE = "none"
    FAIL = "fail"  # 500
    RATE_LIMIT = "rate_limit"  # 429
    HANG = "hang"  # no answer until the client gives up (bounded by hang_seconds)


@dataclass(frozen=True, slots=True)
class FakeLLMConfig:
    """The script of a fake backend.

    Rates are fractions of requests in [0, 1] and add up to at most 1: one seeded
    random draw per request picks at most one of them, so a run with the same seed
    and the same request order injects the same faults.
    """

    #: Tokens (words) in every reply.
    tokens: int = 16
    #: Pause before each streamed token; a non-streamed answer waits ``delay_ms * tokens``.
    delay_ms: float = 0.0
    fail_rate: float = 0.0
    status_429_rate: float = 0.0
    timeout_rate: float = 0.0
    #: The longest a "timeout" request hangs before answering 504 itself.
    hang_seconds: float = 30.0
    #: Streams close the connection after this many tokens, without a terminal marker.
    cut_after: int | None = None
    #: Replies repeat the words of the last user message instead of ``tok0 tok1 ...``.
    echo: bool = False
    seed: int = 0
    #: Request bodies above this answer 413.
    max_body_bytes: int = 1024 * 1024
    #: Model names listed by ``/api/tags`` and ``/v1/models``; any name is accepted.
    models: tuple[str, ...] = ("fake",)

    def __post_init__(self) -> None:
        if self.tokens < 1:
            raise ValueError("tokens must be at least 1")
        if self.delay_ms < 0 or self.hang_seconds < 0:
            raise ValueError("delay_ms and hang_seconds must not be negative")
        rates = (self.fail_rate, self.status_429_rate, self.timeout_rate)
        if any(not 0.0 <= rate <= 1.0 for rate in rates) or sum(rates) > 1.0 + 1e-9:
            raise ValueError("fault rates must be in [0, 1] and add up to at most 1")
        if self.cut_after is not None and self.cut_after < 0:
            raise ValueError("cut_after must not be negative")
        if self.max_body_bytes < 1:
            raise ValueError("max_body_bytes must be positive")


class FaultPicker:
    """Draws the fault of each request from a random generator seeded by the config."""

    def __init__(self, config: FakeLLMConfig) -> None:
        self._fail = config.fail_rate
        self._rate_limit = self._fail + config.status_429_rate
        self._hang = self._rate_limit + config.timeout_rate
        self._random = random.Random(config.seed)

    def next(self) -> Fault:
        """The fault of the next request, in arrival order."""
        if self._hang <= 0.0:
            # No fault configured: skip the draw, which keeps the fast path fast.
            return Fault.NONE
        draw = self._random.random()
        if draw < self._fail:
            return Fault.FAIL
        if draw < self._rate_limit:
            return Fault.RATE_LIMIT
        if draw < self._hang:
            return Fault.HANG
        return Fault.NONE
