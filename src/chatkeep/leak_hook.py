"""A deliberate, configurable leak, to prove the leak detector and the profiler work.

Off unless ``CHATKEEP_TEST_LEAK_BYTES_PER_REQUEST`` is above zero. When on, every HTTP
request keeps a buffer of that many bytes forever, exactly the kind of bug the memory
governor's trend verdict and the ``/admin/memory/profile`` endpoint must catch and name.
Never enable it in production.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send


class LeakEveryRequest:
    """ASGI middleware that retains ``bytes_per_request`` bytes per HTTP request."""

    def __init__(self, app: ASGIApp, *, bytes_per_request: int) -> None:
        self.app = app
        self.bytes_per_request = bytes_per_request
        self.retained: list[bytearray] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.retained.append(bytearray(self.bytes_per_request))  # the leak
        await self.app(scope, receive, send)
