"""What the fake backend does: its reply length, its pace and the faults it injects."""

from __future__ import annotations

import enum
import math
import random
from dataclasses import dataclass


class Fault(enum.Enum):
    """What one request gets instead of (or on top of) a normal answer."""

    NONE = "none"
    FAIL = "fail"  # 500
    RATE_LIMIT = "rate_limit"  # 429 with Retry-After
    HANG = "hang"  # no answer until the client gives up (bounded by hang_seconds)
    UNAVAILABLE = "unavailable"  # 503 with Retry-After


@dataclass(frozen=True, slots=True)
class FakeLLMConfig:
    """The script of a fake backend.

    Fault rates are fractions of requests in [0, 1] and add up to at most 1: one
    seeded random draw per request picks at most one of them, so a run with the same
    seed and the same request order injects the same faults.

    The time to first token is ``first_token_ms``, or ``slow_first_token_ms`` for the
    ``slow_rate`` fraction of requests, plus ``delay_ms``. Whether a request is slow is
    a second seeded draw, made for every chat request whatever its fault, so turning
    slowness on or off never shifts the fault sequence (nor faults the slow one).

    A running backend takes changes to any field through ``POST /_fake/config``.
    """

    #: Tokens (words) in every reply.
    tokens: int = 16
    #: Pause before each streamed token; a non-streamed answer waits ``delay_ms * tokens``.
    delay_ms: float = 0.0
    #: Extra wait before the first token; a stream has sent its headers (and OpenAI's
    #: opening role chunk) by then, so only a real token marks the first token.
    first_token_ms: float = 0.0
    #: Fraction of requests whose first token waits ``slow_first_token_ms`` instead.
    slow_rate: float = 0.0
    slow_first_token_ms: float = 0.0
    fail_rate: float = 0.0
    status_429_rate: float = 0.0
    timeout_rate: float = 0.0
    status_503_rate: float = 0.0
    #: ``Retry-After`` of 429 and 503 answers, rounded up to whole seconds in the header
    #: and exact in ``Retry-After-Ms`` and the body's ``retry_after_seconds``; None
    #: sends none of them.
    retry_after_seconds: float | None = 1.0
    #: Every route but ``/_fake/*`` answers 503 at once, the model listings included.
    down: bool = False
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
        durations = (
            self.delay_ms,
            self.first_token_ms,
            self.slow_first_token_ms,
            self.hang_seconds,
            0.0 if self.retry_after_seconds is None else self.retry_after_seconds,
        )
        if any(not math.isfinite(d) or d < 0 for d in durations):
            raise ValueError(
                "delay_ms, first_token_ms, slow_first_token_ms, hang_seconds and "
                "retry_after_seconds must be finite and not negative"
            )
        rates = (self.fail_rate, self.status_429_rate, self.timeout_rate, self.status_503_rate)
        if any(not 0.0 <= rate <= 1.0 for rate in rates) or sum(rates) > 1.0 + 1e-9:
            raise ValueError("fault rates must be in [0, 1] and add up to at most 1")
        if not 0.0 <= self.slow_rate <= 1.0:
            raise ValueError("slow_rate must be in [0, 1]")
        if self.cut_after is not None and self.cut_after < 0:
            raise ValueError("cut_after must not be negative")
        if self.max_body_bytes < 1:
            raise ValueError("max_body_bytes must be positive")


class FaultPicker:
    """Draws each request's fault and first-token wait from generators seeded by the config.

    The two draws use separate generators, so either sequence depends only on the seed
    and the number of chat requests before it, never on the other's rates.
    """

    def __init__(self, config: FakeLLMConfig) -> None:
        self._seed = config.seed
        self._random = random.Random(config.seed)
        # A string seed is hashed with SHA-512, the same on every run and platform.
        self._slow_random = random.Random(f"slow:{config.seed}")
        self.update(config)

    def update(self, config: FakeLLMConfig) -> None:
        """Take new rates; the draws go on where they were unless the seed changed."""
        if config.seed != self._seed:
            self._seed = config.seed
            self._random.seed(config.seed)
            self._slow_random.seed(f"slow:{config.seed}")
        # Cumulative bounds in the order faults were added, so a new kind never moves
        # the draws that pick the older ones.
        self._fail = config.fail_rate
        self._rate_limit = self._fail + config.status_429_rate
        self._hang = self._rate_limit + config.timeout_rate
        self._unavailable = self._hang + config.status_503_rate
        self._slow_rate = config.slow_rate
        self._first_token = config.first_token_ms / 1000.0
        self._slow_first_token = config.slow_first_token_ms / 1000.0

    def next(self) -> Fault:
        """The fault of the next request, in arrival order."""
        if self._unavailable <= 0.0:
            # No fault configured: skip the draw, which keeps the fast path fast.
            return Fault.NONE
        draw = self._random.random()
        if draw < self._fail:
            return Fault.FAIL
        if draw < self._rate_limit:
            return Fault.RATE_LIMIT
        if draw < self._hang:
            return Fault.HANG
        if draw < self._unavailable:
            return Fault.UNAVAILABLE
        return Fault.NONE

    def first_token_wait(self) -> tuple[float, bool]:
        """The next request's wait before its first token in seconds, and whether it is slow."""
        if self._slow_rate <= 0.0:
            return self._first_token, False
        if self._slow_random.random() < self._slow_rate:
            return self._slow_first_token, True
        return self._first_token, False
