"""A fast, scriptable fake model backend speaking the Ollama and OpenAI wire formats.

Tests start it in-process on port 0 with `start_fake_llm`; benchmarks run it as
``chatkeep fake-llm`` and compare chatkeep against it as the direct backend.

Its script (`FakeLLMConfig`: reply length, pace, time to first token with a slow
fraction, faults and their ``Retry-After``, a down mode) changes while it runs, in
process with ``server.app.configure(config)`` or over HTTP with ``POST /_fake/config``;
``GET /_fake/stats`` (or ``server.app.stats``) counts what reached it, clients that
left a stream before its end included.

    module      what it holds
    config      the script and its seeded draws (faults, slow first tokens)
    wire        the Ollama and OpenAI formats, as pure functions of bytes
    server      the request handler: model routes and the /_fake/* control routes
    control     reading and checking a change of script sent over HTTP
    stats       the counters
    serving     starting and stopping a backend in this event loop
    cli         ``chatkeep fake-llm``
"""

from chatkeep.fakellm.config import FakeLLMConfig, Fault
from chatkeep.fakellm.server import FakeLLMApp
from chatkeep.fakellm.serving import FakeLLMServer, create_app, start_fake_llm
from chatkeep.fakellm.stats import FakeLLMStats

__all__ = [
    "FakeLLMApp",
    "FakeLLMConfig",
    "FakeLLMServer",
    "FakeLLMStats",
    "Fault",
    "create_app",
    "start_fake_llm",
]
