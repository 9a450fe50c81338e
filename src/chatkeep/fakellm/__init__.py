"""A fast, scriptable fake model backend speaking the Ollama and OpenAI wire formats.

Tests start it in-process on port 0 with `start_fake_llm`; benchmarks run it as
``chatkeep fake-llm`` and compare chatkeep against it as the direct backend.
"""

from chatkeep.fakellm.config import FakeLLMConfig, Fault
from chatkeep.fakellm.server import FakeLLMApp, FakeLLMServer, create_app, start_fake_llm

__all__ = [
    "FakeLLMApp",
    "FakeLLMConfig",
    "FakeLLMServer",
    "Fault",
    "create_app",
    "start_fake_llm",
]
