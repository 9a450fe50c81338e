"""ProviderRegistry: names to routes, one shared session per backend, closing once."""

from __future__ import annotations

import pytest

from chatkeep.domain.tokens import estimate_tokens
from chatkeep.errors import UnknownModel
from chatkeep.providers.base import ChatRequest
from chatkeep.providers.echo import EchoProvider
from chatkeep.providers.http import HTTPProvider
from chatkeep.providers.ollama import OllamaProvider
from chatkeep.providers.openai import OpenAIProvider
from chatkeep.providers.registry import ModelRoute, ProviderRegistry
from chatkeep.settings import ModelConfig, Settings
from tests.providers.conftest import StartFakeLLM

REQUEST = ChatRequest(messages=[{"role": "user", "content": "hi"}])


def test_models_resolve_to_their_providers_without_opening_anything() -> None:
    registry = ProviderRegistry(
        {
            "echo": ModelConfig(provider="echo"),
            "llama": ModelConfig(provider="ollama", url="http://127.0.0.1:11434"),
            "gpt": ModelConfig(provider="openai", url="https://api.example.com/v1"),
        }
    )

    assert registry.names() == ["echo", "llama", "gpt"]
    assert isinstance(registry.route("echo").provider, EchoProvider)
    assert isinstance(registry.route("llama").provider, OllamaProvider)
    route = registry.route("gpt")
    assert isinstance(route.provider, OpenAIProvider)
    assert route.config.url == "https://api.example.com/v1"
    # Built outside any event loop: sessions open on first use, inside one.
    assert not any(session.is_open for session in registry.sessions)


def test_an_unknown_model_names_the_known_ones() -> None:
    registry = ProviderRegistry(
        {
            "echo": ModelConfig(provider="echo"),
            "llama": ModelConfig(provider="ollama", url="http://h"),
        }
    )

    with pytest.raises(UnknownModel, match=r"'gpt-9'.*echo, llama"):
        registry.route("gpt-9")


def test_upstream_model_defaults_to_the_name_and_is_the_providers() -> None:
    registry = ProviderRegistry(
        {
            "fast": ModelConfig(provider="ollama", url="http://h", upstream_model="llama3.2:1b"),
            "llama3.2": ModelConfig(provider="ollama", url="http://h"),
        }
    )

    fast, plain = registry.route("fast"), registry.route("llama3.2")
    assert fast.upstream_model == "llama3.2:1b"
    assert plain.upstream_model == "llama3.2"
    assert isinstance(fast.provider, OllamaProvider)
    assert isinstance(plain.provider, OllamaProvider)
    assert (fast.provider.model, fast.provider.upstream_model) == ("fast", "llama3.2:1b")
    assert plain.provider.upstream_model == "llama3.2"


def test_a_route_carries_what_callers_need() -> None:
    config = ModelConfig(provider="echo", context_tokens=999, timeout_seconds=7.0)
    registry = ProviderRegistry({"small": config})

    route = registry.route("small")

    assert route == ModelRoute(
        name="small",
        provider=route.provider,
        upstream_model="small",
        context_tokens=999,
        estimator=estimate_tokens,
        timeout_seconds=7.0,
        config=config,
    )
    assert registry.route("small") is route
    with pytest.raises(AttributeError):
        route.name = "other"  # type: ignore[misc]


def test_models_of_one_backend_share_one_session_with_the_widest_pool() -> None:
    registry = ProviderRegistry(
        {
            "a": ModelConfig(provider="ollama", url="http://gpu-1:11434", max_connections=4),
            "b": ModelConfig(provider="openai", url="http://GPU-1:11434/v1/", max_connections=9),
            "c": ModelConfig(provider="ollama", url="http://gpu-2:11434"),
            "echo": ModelConfig(provider="echo"),
        }
    )

    a, b, c = (registry.route(name).provider for name in "abc")
    assert isinstance(a, HTTPProvider) and isinstance(b, HTTPProvider)
    assert isinstance(c, HTTPProvider)
    assert a.session is b.session
    assert a.session.config.max_connections == 9
    assert c.session is not a.session
    assert len(registry.sessions) == 2


@pytest.mark.parametrize("url", [None, "gpu-1:11434", "ftp://gpu-1"])
def test_an_http_model_needs_an_http_url(url: str | None) -> None:
    with pytest.raises(ValueError, match="'bad'"):
        ProviderRegistry({"bad": ModelConfig(provider="ollama", url=url)})


def test_from_settings_takes_the_models_and_echo_pace() -> None:
    settings = Settings(
        models={"slow-echo": ModelConfig(provider="echo")}, echo_delay_ms=5.0, storage="memory"
    )

    registry = ProviderRegistry.from_settings(settings)

    assert registry.names() == ["slow-echo"]
    assert isinstance(registry.route("slow-echo").provider, EchoProvider)


async def test_one_client_session_serves_both_wire_formats_and_closes_once(
    fake_llm: StartFakeLLM,
) -> None:
    server = await fake_llm(tokens=2)
    registry = ProviderRegistry(
        {
            "native": ModelConfig(provider="ollama", url=server.url, upstream_model="fake"),
            "compat": ModelConfig(provider="openai", url=server.url + "/v1"),
        }
    )
    native = registry.route("native").provider
    compat = registry.route("compat").provider

    assert (await native.complete(REQUEST)).text == "tok0 tok1"
    assert (await compat.complete(REQUEST)).text == "tok0 tok1"
    session = registry.sessions[0].get()
    assert len(registry.sessions) == 1

    await registry.aclose()
    await registry.aclose()

    assert session.closed
    with pytest.raises(RuntimeError, match="closed"):
        await native.complete(REQUEST)


async def test_closing_an_unused_registry_is_fine() -> None:
    registry = ProviderRegistry({"llama": ModelConfig(provider="ollama", url="http://h")})

    await registry.aclose()

    assert not registry.sessions[0].is_open


def test_token_estimator_falls_back_to_the_heuristic() -> None:
    import sys

    registry = ProviderRegistry(
        {
            "echo": ModelConfig(provider="echo"),
            "gpt": ModelConfig(provider="openai", url="http://127.0.0.1:9", tokenizer="auto"),
            "plain": ModelConfig(
                provider="openai", url="http://127.0.0.1:9", tokenizer="heuristic"
            ),
        }
    )
    assert registry.route("echo").estimator is estimate_tokens
    assert registry.route("plain").estimator is estimate_tokens
    if "tiktoken" not in sys.modules:
        # Without tiktoken installed, "auto" counts with the heuristic too.
        try:
            import tiktoken  # noqa: F401
        except ImportError:
            assert registry.route("gpt").estimator is estimate_tokens
