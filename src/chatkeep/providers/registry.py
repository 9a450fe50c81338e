"""The configured models, each resolved once to a `ModelRoute`.

A route is everything a caller needs to use a model: its provider (which already
names the model to its backend), its context budget, its token estimator, its
whole-reply timeout. Callers ask for ``registry.route(name)`` once per request and
hold on to that one object.

Models whose URLs share a backend origin (``scheme://host:port``) share one
`BackendSession`, hence one connection pool, sized by the largest
``max_connections`` among them; each request still uses its own model's timeouts.
Sessions open lazily on first use, inside the running loop; `aclose` closes each once.

A model given as ``backends`` is a `ProviderPool` of one provider per backend (each
backend's session shared by origin like any model's); a model given as one ``url`` is
that one provider, exactly as before pools existed (see docs/providers.md for why).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chatkeep.domain.tokens import TokenEstimator
from chatkeep.errors import UnknownModel
from chatkeep.providers.base import Provider
from chatkeep.providers.echo import EchoProvider
from chatkeep.providers.tokenizers import estimator_for
from chatkeep.settings import BackendConfig, ModelConfig, Settings

if TYPE_CHECKING:
    from prometheus_client.core import Metric

    from chatkeep.providers.http import BackendSession
    from chatkeep.providers.pool import ProviderPool

#: How many names an `UnknownModel` message lists before "...".
_LISTED_NAMES = 20


@dataclass(frozen=True, slots=True)
class ModelRoute:
    """How one model is reached: the one object a caller needs per model."""

    #: chatkeep's name for the model (what clients send).
    name: str
    #: Streams replies; sends ``upstream_model`` to its backend itself.
    provider: Provider
    #: The backend's name for the model (``upstream_model`` in the config, else ``name``).
    upstream_model: str
    #: The token budget of a context sent to the model.
    context_tokens: int
    #: Counts tokens as the model does (a real tokenizer when installed).
    estimator: TokenEstimator
    #: The whole-reply timeout, enforced by the provider (see `chatkeep.providers.http_timeouts`).
    timeout_seconds: float
    config: ModelConfig


class ProviderRegistry:
    """Model name -> `ModelRoute`, with one shared session per backend."""

    def __init__(
        self,
        models: Mapping[str, ModelConfig],
        *,
        echo_delay_ms: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._models = dict(models)
        self._sessions: dict[str, BackendSession] = {}
        self._pools: dict[str, ProviderPool] = {}
        self._clock = clock
        self._sleep = sleep
        self._closed = False

        echo = EchoProvider(echo_delay_ms)
        http_models = {n: c for n, c in self._models.items() if c.provider != "echo"}
        providers: dict[str, Provider] = {
            n: echo for n, c in self._models.items() if c.provider == "echo"
        }
        if http_models:
            providers.update(self._http_providers(http_models))
        # Estimators are made here, at startup: a real tokenizer may load (or fetch) its
        # files, which must not happen on the event loop in the middle of a request.
        self._routes = {
            name: ModelRoute(
                name=name,
                provider=providers[name],
                upstream_model=config.upstream_model or name,
                context_tokens=config.context_tokens,
                estimator=estimator_for(name, config),
                timeout_seconds=config.timeout_seconds,
                config=config,
            )
            for name, config in self._models.items()
        }

    def _http_providers(self, models: dict[str, ModelConfig]) -> dict[str, Provider]:
        # Imported only here: the HTTP client stack costs megabytes of resident memory
        # that an echo-only server never uses.
        from chatkeep.providers.http import BackendSession, HTTPProvider, backend_origin
        from chatkeep.providers.ollama import OllamaProvider
        from chatkeep.providers.openai import OpenAIProvider
        from chatkeep.providers.pool import build_pool

        # Each model's backends as (label, config): one for a plain model, several for a pool.
        members: dict[str, list[tuple[str, ModelConfig]]] = {}
        for name, config in models.items():
            if config.backends:
                members[name] = [
                    (f"model {name!r}, backend {backend_name!r}", member_config(config, backend))
                    for backend_name, backend in zip(
                        config.backend_names(), config.backends, strict=True
                    )
                ]
            else:
                members[name] = [(f"model {name!r}", config)]
        by_origin: dict[str, list[ModelConfig]] = {}
        for configs in members.values():
            for label, config in configs:
                if not config.url:
                    raise ValueError(f"{label}: a {config.provider} model needs a url")
                try:
                    origin = backend_origin(config.url)
                except ValueError as exc:
                    raise ValueError(f"{label}: {exc}") from None
                by_origin.setdefault(origin, []).append(config)
        self._sessions = {
            origin: BackendSession.shared_by(configs) for origin, configs in by_origin.items()
        }

        def provider(name: str, config: ModelConfig) -> HTTPProvider:
            provider_class = OllamaProvider if config.provider == "ollama" else OpenAIProvider
            assert config.url is not None
            return provider_class(name, config, self._sessions[backend_origin(config.url)])

        providers: dict[str, Provider] = {}
        for name, config in models.items():
            if not config.backends:
                providers[name] = provider(name, config)
                continue
            pool = build_pool(
                name,
                config,
                [provider(name, member) for _, member in members[name]],
                clock=self._clock,
                sleep=self._sleep,
            )
            self._pools[name] = pool
            providers[name] = pool
        return providers

    @classmethod
    def from_settings(cls, settings: Settings) -> ProviderRegistry:
        """The registry of ``settings.models``, echo pacing from ``settings.echo_delay_ms``."""
        return cls(settings.models, echo_delay_ms=settings.echo_delay_ms)

    def route(self, name: str) -> ModelRoute:
        """The route of a model; `UnknownModel` lists the known names."""
        route = self._routes.get(name)
        if route is None:
            raise UnknownModel(f"unknown model {name!r}; known models: {self._known()}")
        return route

    def names(self) -> list[str]:
        """The configured model names, in configuration order."""
        return list(self._models)

    @property
    def pools(self) -> dict[str, ProviderPool]:
        """The models served by a pool of backends, by name."""
        return dict(self._pools)

    def provider_stats(self) -> list[dict[str, Any]]:
        """``/admin/providers``: every model, with each pool's backends and their health."""
        from chatkeep.providers.pool_report import model_report

        return [
            model_report(name, config, self._pools.get(name))
            for name, config in self._models.items()
        ]

    def metric_families(self) -> Iterator[Metric]:
        """Prometheus families per model and backend name (only configured names as labels)."""
        from chatkeep.providers.pool_report import metric_families

        return metric_families(self._pools)

    @property
    def sessions(self) -> list[BackendSession]:
        """One per backend origin."""
        return list(self._sessions.values())

    async def aclose(self) -> None:
        """Close every provider and every shared session once. Safe twice."""
        if self._closed:
            return
        self._closed = True
        providers = {id(r.provider): r.provider for r in self._routes.values()}
        for provider in providers.values():
            await provider.aclose()
        for session in self._sessions.values():
            await session.aclose()

    def _known(self) -> str:
        names = sorted(self._models)
        listed = ", ".join(names[:_LISTED_NAMES])
        return listed + (", ..." if len(names) > _LISTED_NAMES else "") if names else "(none)"


def member_config(model: ModelConfig, backend: BackendConfig) -> ModelConfig:
    """The whole configuration of one backend of a pool: its fields over its model's."""
    return model.model_copy(
        update={
            "provider": backend.provider or model.provider,
            "url": backend.url,
            "api_key": backend.api_key,
            "upstream_model": backend.upstream_model or model.upstream_model,
            "max_connections": backend.max_connections or model.max_connections,
            "connect_timeout_seconds": (
                backend.connect_timeout_seconds or model.connect_timeout_seconds
            ),
            "keepalive_seconds": backend.keepalive_seconds or model.keepalive_seconds,
            "backends": [],
        }
    )
