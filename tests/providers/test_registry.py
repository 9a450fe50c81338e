"""ProviderRegistry: names to providers, one shared session per backend, closing once."""

from __future__ import annotations

import pytest

from chatkeep.errors import UnknownModel
from chatkeep.providers.base import ChatRequest
from chatkeep.providers.echo import EchoProvider
from chatkeep.providers.ollama import OllamaProvider
from chatkeep.providers.openai import OpenAIProvider
from chatkeep.providers.registry import ProviderRegistry
from chatkeep.settings import ModelConfig, Settings
from tests.providers.conftest import StartFakeLLM

REQUEST = ChatRequest(model="fake", messages=[{"role": "user", "content": "hi"}])


def test_models_resolve_to_their_providers_without_opening_anything() -> None:
    registry = ProviderRegistry(
        {
            "echo": ModelConfig(provider="echo"),
            "llama": ModelConfig(provider="ollama", url="http://127.0.0.1:11434"),
            "gpt": ModelConfig(provider="openai", url="https://api.example.com/v1"),
        }
    )

    assert registry.names() == ["echo", "llama", "gpt"]
    assert isinstance(registry.get("echo")[0], EchoProvider)
    assert isinstance(registry.get("llama")[0], OllamaProvider)
    provider, config = registry.get("gpt")
    assert isinstance(provider, OpenAIProvider)
    assert config.url == "https://api.example.com/v1"
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
        registry.get("gpt-9")
    with pytest.raises(UnknownModel):
        registry.upstream_model("gpt-9")


def test_upstream_model_defaults_to_the_name() -> None:
    registry = ProviderRegistry(
        {
            "fast": ModelConfig(provider="ollama", url="http://h", upstream_model="llama3.2:1b"),
            "llama3.2": ModelConfig(provider="ollama", url="http://h"),
        }
    )

    assert registry.upstream_model("fast") == "llama3.2:1b"
    assert registry.upstream_model("llama3.2") == "llama3.2"


def test_models_of_one_backend_share_one_session_with_the_widest_pool() -> None:
    registry = ProviderRegistry(
        {
            "a": ModelConfig(provider="ollama", url="http://gpu-1:11434", max_connections=4),
            "b": ModelConfig(provider="openai", url="http://GPU-1:11434/v1/", max_connections=9),
            "c": ModelConfig(provider="ollama", url="http://gpu-2:11434"),
            "echo": ModelConfig(provider="echo"),
        }
    )

    shared = registry.session_for("a")
    assert shared is not None and shared is registry.session_for("b")
    assert shared.config.max_connections == 9
    assert registry.session_for("c") not in (None, shared)
    assert registry.session_for("echo") is None
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
    provider, _ = registry.get("slow-echo")
    assert isinstance(provider, EchoProvider)


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
    native, _ = registry.get("native")
    compat, _ = registry.get("compat")

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

    from chatkeep.domain.tokens import estimate_tokens
    from chatkeep.providers.registry import ProviderRegistry
    from chatkeep.settings import ModelConfig

    registry = ProviderRegistry(
        {
            "echo": ModelConfig(provider="echo"),
            "gpt": ModelConfig(provider="openai", url="http://127.0.0.1:9", tokenizer="auto"),
            "plain": ModelConfig(
                provider="openai", url="http://127.0.0.1:9", tokenizer="heuristic"
            ),
        }
    )
    assert registry.estimator("echo") is estimate_tokens
    assert registry.estimator("plain") is estimate_tokens
    if "tiktoken" not in sys.modules:
        # Without tiktoken installed, "auto" counts with the heuristic too.
        try:
            import tiktoken  # noqa: F401
        except ImportError:
            assert registry.estimator("gpt") is estimate_tokens
