"""A flood of failing requests produces a bounded amount of log."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import httpx
import pytest

from chatkeep.logs import configure_logging
from chatkeep.settings import Settings
from tests.api.conftest import ClientFactory

FAILING_REQUESTS = 10_000


@pytest.fixture
def captured_log() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    stream = io.StringIO()
    handler = configure_logging(Settings(log_format="json").logging, stream=stream)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)


async def test_ten_thousand_failures_log_a_bounded_volume(
    make_client: ClientFactory, captured_log: io.StringIO
) -> None:
    client: httpx.AsyncClient = await make_client()
    body = {"model": "failing", "messages": [{"role": "user", "content": "x" * 2000}]}
    for _ in range(FAILING_REQUESTS):
        response = await client.post("/v1/chat/completions", json=body)
        assert response.status_code == 502
    volume = len(captured_log.getvalue().encode())
    lines = captured_log.getvalue().count("\n")
    assert 0 < lines <= 60, lines
    assert volume < 32 * 1024, volume
