"""A key's open reply as a lease: one slot in `OpenStreams`, shared by all that hold it.

A durable send's reply outlives its HTTP call: a client that leaves loses nothing, and the
reply goes on generating into storage. Counting the HTTP call alone would let a key with
``max_streams`` 1 start one reply, leave, start the next, and so hold every generation
slot. So the quota layer turns the slot it enters for a reply route into a `StreamLease`
with one holder, the call, and puts it in the scope; the send route hands it to the reply
service, whose running reply holds it too. The slot is left when the last holder lets go:
the call's end or the reply's, whichever comes later.

A lease is a counter, not a task or a callback: holding and letting go are a few
attribute writes on the event loop, and the slot is free the moment the last holder's
``release`` returns (before anyone woken by the reply's end can ask for a new one).
"""

from __future__ import annotations

from starlette.types import Scope

from chatkeep.domain.keys import ApiKey
from chatkeep.quotas.streams import OpenStreams

#: Where the quota layer puts the lease of a request on a reply route.
LEASE_SCOPE_KEY = "chatkeep.stream_lease"


class StreamLease:
    """One entered slot of ``key`` in ``streams``, left when its last holder releases it.

    Made by `take`, with one holder (whoever took it). Every `hold` is paired with
    exactly one `release`; holding a lease already given back, or releasing one more
    time than it was held, is a bug and raises `RuntimeError`.
    """

    __slots__ = ("_holders", "_key", "_streams")

    def __init__(self, streams: OpenStreams, key: ApiKey) -> None:
        """Wrap a slot of ``key`` the caller has already entered; use `take` instead."""
        self._streams = streams
        self._key = key
        self._holders = 1

    @classmethod
    def take(cls, streams: OpenStreams, key: ApiKey) -> StreamLease | None:
        """Enter one slot of ``key``; ``None`` when it is at its limit (nothing entered)."""
        if not streams.enter(key):
            return None
        return cls(streams, key)

    @property
    def holders(self) -> int:
        """Holders the lease has now; 0 once the slot was left."""
        return self._holders

    def hold(self) -> None:
        """One more holder: the slot stays entered until it releases the lease too."""
        if self._holders == 0:
            # The slot was left: holding it again would pass the key's limit unchecked.
            raise RuntimeError("this stream lease was already given back")
        self._holders += 1

    def release(self) -> None:
        """One holder lets go; the last one leaves the key's slot."""
        if self._holders == 0:
            raise RuntimeError("this stream lease was released more times than it was held")
        self._holders -= 1
        if self._holders == 0:
            self._streams.leave(self._key)


def scope_lease(scope: Scope) -> StreamLease | None:
    """The lease the quota layer put in ``scope``; ``None`` for a request without a key."""
    lease: StreamLease | None = scope.get(LEASE_SCOPE_KEY)
    return lease
