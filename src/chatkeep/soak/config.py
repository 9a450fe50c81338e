"""`SoakConfig`: everything one soak run needs, validated in one place."""

from __future__ import annotations

from dataclasses import dataclass

#: The default message; ``{n}`` becomes the request number so that no two messages are
#: equal and a response cache in front of the model cannot answer them all.
DEFAULT_MESSAGE = "Soak message {n}: tell me something about the number {n}."


@dataclass(frozen=True, slots=True)
class SoakConfig:
    """One soak run: the target, the load, the memory probe, and the pass criteria.

    Exactly one of ``url`` (a chatkeep server) and ``openai_url`` (any OpenAI-compatible
    endpoint) names the target. At least one of ``requests`` and ``duration`` bounds the
    run; with both, whichever is reached first ends it.
    """

    url: str | None = None
    """Base URL of a chatkeep server, e.g. ``http://127.0.0.1:8350``."""
    openai_url: str | None = None
    """An OpenAI-compatible base URL (``…``, ``…/v1`` or the full ``…/chat/completions``)."""
    model: str | None = None
    """Model name: required for ``openai_url``; for chatkeep, the conversations' model."""
    api_key: str | None = None
    """Sent as ``Authorization: Bearer …`` when set."""
    stream: bool = False
    """Ask for streamed replies (SSE) and measure time to first token."""

    requests: int | None = None
    """Stop after this many requests."""
    duration: float | None = None
    """Stop starting requests after this many seconds."""
    concurrency: int = 8
    """Closed loop: the number of workers. Open loop: the bound on requests in flight."""
    rate: float | None = None
    """Requests per second for an open loop; ``None`` runs a closed loop."""
    timeout: float = 60.0
    """Seconds allowed for one whole request, reply included."""

    messages_per_conversation: int = 0
    """chatkeep: open a new conversation after this many messages (0: one per lane)."""
    message: str = DEFAULT_MESSAGE
    """Message text; ``{n}`` is replaced by the request number."""
    client_message_ids: bool = False
    """chatkeep: send a unique ``client_message_id`` with each message."""

    pid: int | None = None
    """Sample RSS/USS of this process and its children."""
    metrics_url: str | None = None
    """Sample the resident memory gauge of this Prometheus ``/metrics`` URL."""
    sample_interval: float = 0.1
    """Seconds between memory samples (the series is thinned, so long runs cost no more)."""
    uss_every: int = 8
    """Read USS on every n-th sample only: it walks the whole memory map and is slow."""

    warmup_fraction: float = 0.2
    """Share of the requests ignored by the trend test (pools and caches filling up)."""
    leak_threshold: float = 256.0
    """Bytes per request from which a significant slope reads ``growing``."""
    min_success: float = 0.99
    """A run with a lower success rate fails."""

    max_memory_samples: int = 2048
    """Bound on the memory samples kept (the series is thinned when full)."""
    max_latency_points: int = 4096
    """Bound on the per-request latency points kept for the plot."""

    def __post_init__(self) -> None:
        problems = list(self._problems())
        if problems:
            raise ValueError("; ".join(problems))

    def _problems(self) -> list[str]:
        found: list[str] = []
        if (self.url is None) == (self.openai_url is None):
            found.append("give exactly one target: url (chatkeep) or openai_url")
        if self.openai_url is not None and not self.model:
            found.append("an OpenAI-compatible target needs a model")
        if self.requests is None and self.duration is None:
            found.append("bound the run with requests or duration")
        if self.requests is not None and self.requests < 1:
            found.append("requests must be at least 1")
        if self.duration is not None and not self.duration > 0:
            found.append("duration must be positive")
        if self.concurrency < 1:
            found.append("concurrency must be at least 1")
        if self.rate is not None and not self.rate > 0:
            found.append("rate must be positive")
        if not self.timeout > 0:
            found.append("timeout must be positive")
        if self.messages_per_conversation < 0:
            found.append("messages_per_conversation must be 0 or more")
        if self.pid is not None and self.metrics_url is not None:
            found.append("sample memory by pid or by metrics_url, not both")
        if not self.sample_interval > 0:
            found.append("sample_interval must be positive")
        if self.uss_every < 1:
            found.append("uss_every must be at least 1")
        if not 0.0 <= self.warmup_fraction < 1.0:
            found.append("warmup_fraction must be in [0, 1)")
        if not 0.0 <= self.min_success <= 1.0:
            found.append("min_success must be in [0, 1]")
        if self.max_memory_samples < 16 or self.max_latency_points < 16:
            found.append("keep at least 16 memory samples and latency points")
        return found

    @property
    def target_kind(self) -> str:
        """``chatkeep`` or ``openai``."""
        return "chatkeep" if self.url is not None else "openai"

    @property
    def open_loop(self) -> bool:
        """Whether requests are started at a fixed rate rather than by free workers."""
        return self.rate is not None
