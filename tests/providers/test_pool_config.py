"""A model's backends in TOML and in ``CHATKEEP_MODELS``; the one-URL form unchanged."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from pydantic import ValidationError

from chatkeep.providers.openai import OpenAIProvider
from chatkeep.providers.pool import ProviderPool
from chatkeep.providers.registry import ProviderRegistry
from chatkeep.settings import BackendConfig, ModelConfig, load_settings

TWO_BACKENDS = """
default_model = "gpt"

[models.gpt]
provider = "openai"
upstream_model = "gpt-4o-mini"
balancing = "latency"
attempts = 2
attempt_timeout_seconds = 20
hedge_after_ms = "adaptive"

[[models.gpt.backends]]
name = "primary"
url = "https://api.example.com/v1"
api_key = "sk-one"
max_connections = 50

[[models.gpt.backends]]
url = "http://127.0.0.1:11434"
provider = "ollama"
upstream_model = "llama3.2"
weight = 0.5
"""


def test_a_two_backend_model_reads_from_toml(tmp_path: Path) -> None:
    config = tmp_path / "chatkeep.toml"
    config.write_text(TWO_BACKENDS)

    model = load_settings(config).models["gpt"]

    assert model.balancing == "latency"
    assert (model.attempts, model.attempt_timeout_seconds, model.hedge_after_ms) == (
        2,
        20.0,
        "adaptive",
    )
    assert model.backends == [
        BackendConfig(
            name="primary", url="https://api.example.com/v1", api_key="sk-one", max_connections=50
        ),
        BackendConfig(
            url="http://127.0.0.1:11434", provider="ollama", upstream_model="llama3.2", weight=0.5
        ),
    ]
    assert model.backend_names() == ["primary", "127.0.0.1:11434"]


def test_backends_read_from_chatkeep_models_json(monkeypatch: pytest.MonkeyPatch) -> None:
    models = {
        "gpt": {
            "provider": "openai",
            "backends": [
                {"url": "http://10.0.0.1:8000/v1", "api_key": "k1"},
                {"url": "http://10.0.0.1:8000/v1", "api_key": "k2"},
            ],
            "hedge_after_ms": 400,
        }
    }
    monkeypatch.setenv("CHATKEEP_MODELS", orjson.dumps(models).decode())
    monkeypatch.setenv("CHATKEEP_DEFAULT_MODEL", "gpt")

    model = load_settings().models["gpt"]

    assert [b.api_key for b in model.backends] == ["k1", "k2"]
    assert model.hedge_after_ms == 400.0
    # Two keys on one URL are two backends, named apart.
    assert model.backend_names() == ["10.0.0.1:8000", "10.0.0.1:8000#2"]


def test_the_one_url_form_is_unchanged_and_stays_a_plain_provider(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    models = {"gpt": {"provider": "openai", "url": "http://h:1/v1", "api_key": "k"}}
    monkeypatch.setenv("CHATKEEP_MODELS", orjson.dumps(models).decode())
    monkeypatch.setenv("CHATKEEP_DEFAULT_MODEL", "gpt")
    settings = load_settings()

    registry = ProviderRegistry.from_settings(settings)

    assert settings.models["gpt"].backends == []
    assert isinstance(registry.route("gpt").provider, OpenAIProvider)
    assert registry.pools == {}
    assert registry.provider_stats() == [
        {"model": "gpt", "provider": "openai", "pooled": False, "backends": []}
    ]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"provider": "openai", "url": "http://h", "backends": [{"url": "http://i"}]}, "either"),
        ({"provider": "echo", "backends": [{"url": "http://i"}]}, "echo model has no backends"),
        (
            {"provider": "openai", "backends": [{"name": "x", "url": "http://a"}] * 2},
            "unique",
        ),
        ({"provider": "openai", "backends": [{"url": "http://a", "weight": 0}]}, "weight"),
        ({"provider": "openai", "backends": [{"url": "http://a", "colour": 1}]}, "colour"),
        ({"provider": "openai", "hedge_after_ms": -1}, "hedge_after_ms"),
        ({"provider": "openai", "hedge_after_ms": "sometimes"}, "hedge_after_ms"),
        ({"provider": "openai", "backends": [{"url": "http://a"}] * 65}, "backends"),
    ],
)
def test_a_wrong_pool_is_refused_with_a_reason(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ModelConfig.model_validate(fields)


def test_each_backend_gets_its_model_settings_unless_it_has_its_own() -> None:
    model = ModelConfig(
        provider="openai",
        upstream_model="big",
        max_connections=20,
        backends=[
            BackendConfig(url="http://a:1/v1", api_key="ka"),
            BackendConfig(url="http://a:1/v1", api_key="kb", upstream_model="other"),
            BackendConfig(url="http://b:2", provider="ollama", max_connections=3, max_inflight=2),
        ],
    )
    registry = ProviderRegistry({"m": model})

    pool = registry.route("m").provider
    assert isinstance(pool, ProviderPool)
    providers = [backend.provider for backend in pool.backends]
    assert [p.kind for p in providers] == ["openai", "openai", "ollama"]
    assert [p.upstream_model for p in providers] == ["big", "other", "big"]
    assert [b.max_inflight for b in pool.backends] == [20, 20, 2]
    # Backends on one origin share one session, hence one connection pool.
    assert providers[0].session is providers[1].session
    assert len(registry.sessions) == 2
    assert not pool.supports_passthrough  # an Ollama backend cannot relay OpenAI bodies


def test_an_unusable_backend_url_names_the_model_and_backend() -> None:
    model = ModelConfig(provider="openai", backends=[BackendConfig(name="x", url="ftp://a")])
    with pytest.raises(ValueError, match=r"model 'm', backend 'x': not an http\(s\) URL"):
        ProviderRegistry({"m": model})
