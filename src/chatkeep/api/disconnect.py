"""Stop sending a streamed answer once its client has gone.

uvicorn's ``send`` after a disconnect does nothing and raises nothing, so a streamed
answer whose client left would go on to its end: holding its admission slot, its backend
request and its place in a reply stream. `until_disconnected` runs the sending coroutine
with one watcher task reading ``receive`` for ``http.disconnect``; when it comes, the
sending is cancelled and `until_disconnected` returns normally.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable

from starlette.types import Receive


async def until_disconnected(sending: Awaitable[None], receive: Receive) -> bool:
    """Await ``sending``; stop it if the client disconnects. True when it went away.

    ``receive`` must have nothing left to give but the disconnect (the body was read).
    """
    task = asyncio.current_task()
    assert task is not None
    gone = False

    async def watch() -> None:
        nonlocal gone
        while (await receive())["type"] != "http.disconnect":
            pass
        gone = True
        task.cancel()

    watcher = asyncio.create_task(watch(), name="disconnect-watcher")
    try:
        await sending
    except asyncio.CancelledError:
        if not gone or task.uncancel() > 0:
            raise
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    return gone
