"""The `Provider` interface every model backend implements.

A provider turns a `ChatRequest` into a stream of `Chunk`s. It raises only
`chatkeep.errors.ProviderError` subclasses: driver errors (aiohttp, JSON) are
translated inside the provider that saw them, and the message becomes the
``reason`` stored with an incomplete reply.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from chatkeep.domain.records import Usage


@dataclass(slots=True)
class ChatRequest:
    """What is sent to a model: the messages and options.

    No model name: a provider serves one model and names it to its backend itself.
    """

    messages: list[dict[str, str]]
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Chunk:
    """A piece of a reply. The last chunk may carry usage and a finish reason."""

    text: str
    usage: Usage | None = None
    finish_reason: str | None = None


@dataclass(slots=True)
class Completion:
    """A whole reply, collected from a stream."""

    text: str
    usage: Usage | None
    finish_reason: str | None


@dataclass(slots=True)
class PassthroughResponse:
    """An upstream HTTP answer relayed byte for byte to an OpenAI-compatible client."""

    status: int
    content_type: str
    body: AsyncIterator[bytes]
    #: The upstream ``Retry-After`` header, as given (a provider pool reads it).
    retry_after: str | None = None


class Provider(abc.ABC):
    """A model backend. Instances are long-lived and shared; `aclose` releases them.

    A provider owns its model's whole-reply timeout (``timeout_seconds``): a reply that
    outlasts it ends in `ProviderTimeout`, so callers add no timer of their own around
    a reply (only, if they like, a bound on the silence between pieces).
    """

    #: True when `passthrough` relays OpenAI chat-completion requests unchanged.
    supports_passthrough: bool = False

    @abc.abstractmethod
    def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        """Yield the reply piece by piece. Raises `ProviderError` on failure or a cut stream."""

    async def complete(self, request: ChatRequest) -> Completion:
        """Collect the whole reply."""
        parts: list[str] = []
        usage: Usage | None = None
        finish_reason: str | None = None
        async for chunk in self.stream(request):
            parts.append(chunk.text)
            usage = chunk.usage or usage
            finish_reason = chunk.finish_reason or finish_reason
        return Completion("".join(parts), usage, finish_reason)

    async def passthrough(self, body: bytes) -> PassthroughResponse:
        """Relay a raw OpenAI chat-completions body that names this provider's model.

        The provider puts its backend's name for the model in, when that differs.
        """
        raise NotImplementedError(f"{type(self).__name__} does not relay raw requests")

    async def aclose(self) -> None:  # noqa: B027 - optional hook, most providers hold nothing
        """Release connections. Safe to call twice."""
