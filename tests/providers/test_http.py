"""The shared HTTP plumbing: backend names, excerpts and the error translation."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from chatkeep.errors import ProviderError, ProviderTimeout, ProviderUnavailable, StreamCut
from chatkeep.providers.base import ChatRequest
from chatkeep.providers.http import (
    backend_label,
    backend_origin,
    excerpt,
    provider_errors,
    remaining_timeout,
)
from chatkeep.providers.openai import OpenAIProvider
from chatkeep.settings import ModelConfig
from tests.providers.conftest import StartRawBackend


def test_origins_ignore_paths_and_case() -> None:
    assert backend_origin("http://GPU-1:11434/v1/") == "http://gpu-1:11434"
    assert backend_origin("https://api.example.com") == "https://api.example.com"


def test_labels_never_show_credentials() -> None:
    label = backend_label("openai", "http://user:secret@h:1/v1?api-key=secret")

    assert label == "openai at http://h:1/v1"


def test_excerpts_are_one_short_line() -> None:
    assert excerpt("  a\n\tb  ") == "a b"
    assert excerpt("x" * 500, limit=10) == "x" * 9 + "…"


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (TimeoutError(), ProviderTimeout),
        (aiohttp.ServerTimeoutError("read"), ProviderTimeout),
        (aiohttp.ClientPayloadError("not completed"), StreamCut),
        (aiohttp.ServerDisconnectedError(), ProviderUnavailable),
        (aiohttp.ClientOSError(104, "Connection reset by peer"), ProviderUnavailable),
        (ValueError("Expecting value"), ProviderUnavailable),
    ],
)
def test_driver_errors_become_provider_errors(raised: Exception, expected: type) -> None:
    with pytest.raises(expected, match=r"^b at h") as caught, provider_errors("b at h"):
        raise raised

    assert type(caught.value) is expected
    assert caught.value.__cause__ is raised


def test_provider_errors_and_cancellation_pass_unchanged() -> None:
    own = StreamCut("already ours")
    with pytest.raises(StreamCut) as caught, provider_errors("b"):
        raise own
    assert caught.value is own

    with pytest.raises(asyncio.CancelledError), provider_errors("b"):
        raise asyncio.CancelledError


async def test_a_huge_error_body_is_quoted_briefly(
    raw_backend: StartRawBackend, closing: Callable[[Any], Any]
) -> None:
    backend = await raw_backend([b"E" * 100_000], status=503)
    provider = closing(OpenAIProvider("m", ModelConfig(provider="openai", url=backend.url)))

    with pytest.raises(ProviderError) as caught:
        await provider.complete(ChatRequest([]))

    assert "503" in caught.value.message
    assert len(caught.value.message) < 300


def test_a_retry_gets_what_is_left_of_the_whole_reply_timeout() -> None:
    timeout = aiohttp.ClientTimeout(total=10.0, sock_connect=2.0)

    left = remaining_timeout(timeout, started=time.monotonic() - 4.0)

    assert left.total is not None and 0 < left.total <= 6.0
    assert left.sock_connect == 2.0
    with pytest.raises(TimeoutError):
        remaining_timeout(timeout, started=time.monotonic() - 11.0)
