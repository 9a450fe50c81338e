"""A request head over ``CHATKEEP_MAX_HEADER_BYTES`` is refused before it costs memory."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import psutil
import pytest

from tests.e2e.server import CLEAN_EXIT, ServerProcess

pytestmark = pytest.mark.e2e

MiB = 1024 * 1024


def _raw(port: int, head: bytes, body: bytes = b"", chunk: int = 64 * 1024) -> bytes:
    """Send ``head`` (and ``body``) in pieces; return what the server answered."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            for start in range(0, len(head), chunk):
                sock.sendall(head[start : start + chunk])
            sock.sendall(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server closed the connection: read what it said first
        answer = b""
        while True:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            answer += data
        return answer


def test_a_huge_header_is_431_and_memory_stays_put(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", env={"CHATKEEP_MAX_HEADER_BYTES": "32KiB"})
    server.start()
    try:
        before = psutil.Process(server.pid).memory_info().rss
        huge = b"x" * (64 * MiB)
        answer = _raw(
            server.port,
            b"GET /api/conversations HTTP/1.1\r\nhost: t\r\nx-api-key: " + huge + b"\r\n\r\n",
        )
        after = psutil.Process(server.pid).memory_info().rss
        # A head just under the bound, and a body far over it, are served as usual.
        fits = httpx.get(
            f"{server.url}/api/conversations", headers={"x-padding": "p" * (24 * 1024)}
        )
        body = b'{"title": "' + b"t" * 200_000 + b'"}'
        big_body = httpx.post(
            f"{server.url}/api/conversations",
            content=body,
            headers={"content-type": "application/json"},
        )
    finally:
        assert server.stop() in CLEAN_EXIT
    assert answer.startswith(b"HTTP/1.1 431 ")
    assert b'"code":"headers_too_large"' in answer
    assert after - before < 16 * MiB
    assert fits.status_code == 200
    assert big_body.status_code == 422  # the title is too long: the body was read and judged
