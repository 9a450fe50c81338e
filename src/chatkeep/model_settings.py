"""How one model name reaches its backends: `ModelConfig`, and `BackendConfig` for pools.

A model is either one backend (``url``, ``api_key`` on the model: the plain provider) or
a pool of them (``backends = [...]`` with the pool's options). Part of the settings tree
(`chatkeep.settings.Settings.models`); kept apart because its rules (credentials, pool
options, bounds on the backends) are a subject of their own.
"""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: The most backends one model may have (each is a label value of the provider metrics).
MAX_BACKENDS = 64

#: How a model or backend is validated. An error never echoes its input, which holds the
#: API keys; and a time given as ``inf`` (or ``nan``) is refused, since it only fails later,
#: on every request, when the event loop turns it into a deadline.
_MODEL_CONFIG = ConfigDict(extra="forbid", allow_inf_nan=False, hide_input_in_errors=True)

#: `ModelConfig` options only a pool (a model given as ``backends``) reads.
POOL_OPTIONS = (
    "balancing",
    "attempts",
    "attempt_timeout_seconds",
    "retry_backoff_seconds",
    "retry_backoff_max_seconds",
    "hedge_after_ms",
    "hedge_budget",
    "breaker_failures",
    "breaker_cooldown_seconds",
    "max_retry_after_seconds",
    "probe_interval_seconds",
    "probe_timeout_seconds",
    "health_window",
    "degraded_error_rate",
)


def _check_credentials(url: str | None, api_key: str | None) -> None:
    """Refuse a URL with ``user:password@`` together with an API key.

    A request cannot carry both (aiohttp refuses an Authorization header next to
    credentials in the URL), so each one would fail; the message quotes neither.
    """
    if url is None or api_key is None:
        return
    try:
        netloc = urlsplit(url).netloc
    except ValueError:
        return  # not a URL at all: the registry says so, naming the model
    if "@" in netloc:
        raise ValueError(
            "url has credentials (user:password@) and api_key is set too: a request "
            "cannot send both; keep one"
        )


class BackendConfig(BaseModel):
    """One backend of a model: a URL and, optionally, its own key, name and bounds.

    Several API keys on one URL are several backends. A field left unset takes the
    model's value (``provider``, ``upstream_model``, ``max_connections``…).
    """

    model_config = ConfigDict(**_MODEL_CONFIG, frozen=True)

    name: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="How /admin and /metrics name it; defaults to host:port (#n when repeated).",
    )
    provider: Literal["ollama", "openai"] | None = Field(
        default=None, description="Wire format; defaults to the model's."
    )
    url: str = Field(description="Backend base URL.")
    api_key: str | None = Field(default=None, description="Bearer key sent to this backend.")
    upstream_model: str | None = Field(default=None, description="This backend's model name.")
    weight: float = Field(default=1.0, gt=0, description="Share of traffic under `weighted`.")
    max_connections: int | None = Field(default=None, ge=1)
    max_inflight: int | None = Field(
        default=None, ge=1, description="Requests at once; defaults to max_connections."
    )
    connect_timeout_seconds: float | None = Field(default=None, gt=0)
    attempt_timeout_seconds: float | None = Field(default=None, gt=0)
    keepalive_seconds: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _one_kind_of_credentials(self) -> BackendConfig:
        _check_credentials(self.url, self.api_key)
        return self


class ModelConfig(BaseModel):
    """How one model name reaches its backend, or the pool of backends that serve it.

    The one-backend form (``url``, ``api_key`` on the model) is a plain provider, as it
    always was; ``backends`` makes the model a pool (see docs/providers.md). The pool
    options below (`POOL_OPTIONS`) are read only by pools, so the one-backend form refuses
    them rather than ignore them.
    """

    model_config = _MODEL_CONFIG

    provider: Literal["echo", "ollama", "openai"]
    url: str | None = Field(default=None, description="Backend base URL (ollama, openai).")
    api_key: str | None = Field(default=None, description="Bearer key sent to the backend.")
    upstream_model: str | None = Field(
        default=None, description="The backend's name for the model; defaults to the key."
    )
    context_tokens: int = Field(default=4096, ge=64, description="Context budget in tokens.")
    timeout_seconds: float = Field(
        default=120.0, gt=0, description="Whole-reply timeout: a pool's total deadline."
    )
    connect_timeout_seconds: float = Field(default=5.0, gt=0)
    max_connections: int = Field(default=100, ge=1, description="Connection pool bound.")
    # Below the backend's own idle timeout, or a connection it just closed gets reused:
    # uvicorn (vLLM, most Python servers) closes idle ones after 5 s by default.
    keepalive_seconds: float = Field(
        default=4.0, gt=0, description="Idle backend connections are closed after this long."
    )
    tokenizer: Literal["auto", "heuristic"] = Field(
        default="auto", description="auto: a real tokenizer when one is installed."
    )

    backends: list[BackendConfig] = Field(
        default_factory=list, max_length=MAX_BACKENDS, description="A pool's backends."
    )
    balancing: Literal["least_inflight", "latency", "weighted", "ordered"] = "least_inflight"
    attempts: int = Field(
        default=3, ge=1, le=10, description="Tries per reply before its first token."
    )
    # Unset: an attempt may wait for its first token until the total deadline.
    attempt_timeout_seconds: float | None = Field(
        default=None, gt=0, description="How long one attempt may wait for its first token."
    )
    retry_backoff_seconds: float = Field(default=0.05, ge=0)
    retry_backoff_max_seconds: float = Field(default=2.0, ge=0)
    hedge_after_ms: Annotated[float, Field(ge=0)] | Literal["adaptive"] | None = Field(
        default=None, description="Hedge after this long without a first token; off when unset."
    )
    hedge_budget: float = Field(default=0.05, ge=0, le=1, description="Extra requests, at most.")
    breaker_failures: int = Field(default=3, ge=1, description="Consecutive failures to open.")
    breaker_cooldown_seconds: float = Field(default=10.0, gt=0)
    # A backend's Retry-After is honoured up to this long (it is data from the network).
    max_retry_after_seconds: float = Field(default=300.0, gt=0)
    probe_interval_seconds: float = Field(default=5.0, gt=0)
    probe_timeout_seconds: float = Field(default=2.0, gt=0)
    health_window: int = Field(default=100, ge=10, le=10_000, description="Samples per backend.")
    degraded_error_rate: float = Field(default=0.25, gt=0, le=1)

    @model_validator(mode="after")
    def _one_form(self) -> ModelConfig:
        # No message below quotes a value: a model's values include its API keys.
        if not self.backends:
            if "backends" in self.model_fields_set:
                raise ValueError(
                    "backends: at least one backend is needed (or, for one backend, url instead)"
                )
            pool_only = [name for name in POOL_OPTIONS if name in self.model_fields_set]
            if pool_only:
                raise ValueError(
                    f"{', '.join(pool_only)}: only a model given as backends reads "
                    f"{'this' if len(pool_only) == 1 else 'these'}; give backends = "
                    "[{url = ...}] instead of url, or remove "
                    f"{'it' if len(pool_only) == 1 else 'them'}"
                )
            _check_credentials(self.url, self.api_key)
            return self
        if self.provider == "echo":
            raise ValueError("an echo model has no backends")
        if self.url is not None or self.api_key is not None:
            raise ValueError("give either url/api_key or backends, not both")
        names = [b.name for b in self.backends if b.name is not None]
        if len(names) != len(set(names)):
            raise ValueError("backend names must be unique within a model")
        return self

    def backend_names(self) -> list[str]:
        """Each backend's name: its own, else ``host:port`` (``#2``, ``#3``… when repeated)."""
        taken = {b.name for b in self.backends if b.name is not None}
        names: list[str] = []
        seen: dict[str, int] = {}
        for backend in self.backends:
            if backend.name is not None:
                names.append(backend.name)
                continue
            base = _host_port(backend.url)
            seen[base] = seen.get(base, 0) + 1
            name = base if seen[base] == 1 else f"{base}#{seen[base]}"
            while name in taken:
                seen[base] += 1
                name = f"{base}#{seen[base]}"
            taken.add(name)
            names.append(name)
        return names


def _host_port(url: str) -> str:
    """``host:port`` of a URL, for a default backend name (no credentials, no path)."""
    rest = url.split("://", 1)[-1].split("/", 1)[0]
    return rest.rsplit("@", 1)[-1] or url


def default_models() -> dict[str, ModelConfig]:
    """The models of a server configured with none: the built-in ``echo``."""
    return {"echo": ModelConfig(provider="echo")}
