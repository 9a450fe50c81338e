"""The configured models, each resolved to its provider.

Models whose URLs share a backend origin (``scheme://host:port``) share one
`BackendSession`, hence one connection pool, sized by the largest
``max_connections`` among them; each request still uses its own model's timeouts.
Sessions open lazily on first use, inside the running loop; `aclose` closes each once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from chatkeep.domain.tokens import TokenEstimator
from chatkeep.errors import UnknownModel
from chatkeep.providers.base import Provider
from chatkeep.providers.echo import EchoProvider
from chatkeep.providers.tokenizers import estimator_for
from chatkeep.settings import ModelConfig, Settings

if TYPE_CHECKING:
    from chatkeep.providers.http import BackendSession

#: How many names an `UnknownModel` message lists before "...".
_LISTED_NAMES = 20


class ProviderRegistry:
    """Model name -> (provider, config), with one shared session per backend."""

    def __init__(self, models: Mapping[str, ModelConfig], *, echo_delay_ms: float = 0.0) -> None:
        self._models = dict(models)
        self._providers: dict[str, Provider] = {}
        self._sessions: dict[str, BackendSession] = {}
        self._closed = False
        self._estimators: dict[str, TokenEstimator] = {}

        echo = EchoProvider(echo_delay_ms)
        http_models = {n: c for n, c in self._models.items() if c.provider != "echo"}
        self._providers = {n: echo for n, c in self._models.items() if c.provider == "echo"}
        if http_models:
            self._add_http_providers(http_models)

    def _add_http_providers(self, models: dict[str, ModelConfig]) -> None:
        # Imported only here: the HTTP client stack costs megabytes of resident memory
        # that an echo-only server never uses.
        from chatkeep.providers.http import BackendSession, backend_origin
        from chatkeep.providers.ollama import OllamaProvider
        from chatkeep.providers.openai import OpenAIProvider

        by_origin: dict[str, list[ModelConfig]] = {}
        origins: dict[str, str] = {}
        for name, config in models.items():
            if not config.url:
                raise ValueError(f"model {name!r}: a {config.provider} model needs a url")
            try:
                origins[name] = backend_origin(config.url)
            except ValueError as exc:
                raise ValueError(f"model {name!r}: {exc}") from None
            by_origin.setdefault(origins[name], []).append(config)
        self._sessions = {
            origin: BackendSession.shared_by(configs) for origin, configs in by_origin.items()
        }
        for name, config in models.items():
            provider_class = OllamaProvider if config.provider == "ollama" else OpenAIProvider
            self._providers[name] = provider_class(config, self._sessions[origins[name]])

    @classmethod
    def from_settings(cls, settings: Settings) -> ProviderRegistry:
        """The registry of ``settings.models``, echo pacing from ``settings.echo_delay_ms``."""
        return cls(settings.models, echo_delay_ms=settings.echo_delay_ms)

    def get(self, name: str) -> tuple[Provider, ModelConfig]:
        """The provider and config of a model; `UnknownModel` lists the known names."""
        provider = self._providers.get(name)
        if provider is None:
            raise UnknownModel(f"unknown model {name!r}; known models: {self._known()}")
        return provider, self._models[name]

    def estimator(self, name: str) -> TokenEstimator:
        """How a model's tokens are counted (a real tokenizer when installed)."""
        estimator = self._estimators.get(name)
        if estimator is None:
            _, config = self.get(name)
            estimator = self._estimators[name] = estimator_for(name, config)
        return estimator

    def names(self) -> list[str]:
        """The configured model names, in configuration order."""
        return list(self._models)

    def upstream_model(self, name: str) -> str:
        """The backend's name for a model: ``upstream_model`` when set, else the name."""
        _, config = self.get(name)
        return config.upstream_model or name

    def session_for(self, name: str) -> BackendSession | None:
        """The shared backend session of a model (None for echo)."""
        _, config = self.get(name)
        if not config.url:
            return None
        from chatkeep.providers.http import backend_origin

        return self._sessions[backend_origin(config.url)]

    @property
    def sessions(self) -> list[BackendSession]:
        """One per backend origin."""
        return list(self._sessions.values())

    async def aclose(self) -> None:
        """Close every provider and every shared session once. Safe twice."""
        if self._closed:
            return
        self._closed = True
        for provider in {id(p): p for p in self._providers.values()}.values():
            await provider.aclose()
        for session in self._sessions.values():
            await session.aclose()

    def _known(self) -> str:
        names = sorted(self._models)
        listed = ", ".join(names[:_LISTED_NAMES])
        return listed + (", ..." if len(names) > _LISTED_NAMES else "") if names else "(none)"
