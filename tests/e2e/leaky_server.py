"""``chatkeep serve`` with a deliberate leak, to prove the leak verdict and the profiler work.

    python -m tests.e2e.leaky_server --bytes-per-request 4096 serve --port 8351

Everything after the leak options is the ordinary ``chatkeep`` command line: the server is
built and run by the real ``serve`` command (settings, logging, data-directory lock, garbage
collector tuning, uvicorn), and only the application it serves is wrapped, so the process
measured is the product plus one retained buffer per HTTP request and nothing else. The
e2e leak test and ``bench/leak.py`` both launch it; the product carries no leak switch.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

import chatkeep.app
from chatkeep.cli import main as chatkeep_main

logger = logging.getLogger("chatkeep")


class LeakEveryRequest:
    """ASGI middleware that retains ``bytes_per_request`` bytes per HTTP request, forever."""

    def __init__(self, app: ASGIApp, *, bytes_per_request: int) -> None:
        self.app = app
        self.bytes_per_request = bytes_per_request
        self.retained: list[bytearray] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.retained.append(bytearray(self.bytes_per_request))  # the leak
        await self.app(scope, receive, send)

    def __getattr__(self, name: str) -> Any:
        # Anything else (``state``…) is the wrapped application's, so `serve` can use the
        # wrapper wherever it uses the app it built.
        return getattr(self.app, name)


def leaky_factory(
    create_app: Callable[..., ASGIApp], bytes_per_request: int
) -> Callable[..., ASGIApp]:
    """``create_app`` whose application is wrapped in `LeakEveryRequest` (outermost)."""

    def create_leaky_app(*args: Any, **kwargs: Any) -> ASGIApp:
        app = create_app(*args, **kwargs)
        if bytes_per_request <= 0:
            return app
        logger.warning("TEST LEAK: every request retains %d bytes", bytes_per_request)
        return LeakEveryRequest(app, bytes_per_request=bytes_per_request)

    return create_leaky_app


def main(argv: list[str] | None = None) -> None:
    """Parse the leak options, then run the ``chatkeep`` command line with the rest."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bytes-per-request", type=int, default=4096)
    options, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    # `serve` imports create_app from chatkeep.app when it runs, so it builds this one.
    # (The e2e leak test fails if it ever stops doing so: the profiler must name this file.)
    chatkeep.app.create_app = leaky_factory(  # type: ignore[assignment]
        chatkeep.app.create_app, options.bytes_per_request
    )
    chatkeep_main(rest)


if __name__ == "__main__":
    main()
