"""What a fake backend has seen, as a fixed set of integers (``GET /_fake/stats``).

Tests and benchmarks read these to learn what reached the backend: how many requests,
which faults they got, and whether a client left a stream before its end (the loser of
a hedged request must close its upstream connection). Counters only ever count, so the
memory they take is the same after a billion requests as after one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from chatkeep.fakellm.config import Fault

#: The keys of `FakeLLMStats.faults`: every injected fault, and answers of the down mode.
FAULT_NAMES: tuple[str, ...] = (*(f.value for f in Fault if f is not Fault.NONE), "down")


def _no_faults() -> dict[str, int]:
    return dict.fromkeys(FAULT_NAMES, 0)


@dataclass(slots=True)
class FakeLLMStats:
    """Counters of one backend; ``/_fake/*`` requests are not counted."""

    #: Requests received, any route (503s of the down mode and 404s included).
    requests: int = 0
    #: Requests whose handler is running now.
    in_flight: int = 0
    #: Well-formed chat requests: each drew a fault and a first-token wait.
    chat_requests: int = 0
    #: Answers that waited ``slow_first_token_ms`` (slow draws of faulted requests excluded).
    slow: int = 0
    streams_started: int = 0
    #: Streams that wrote their terminal marker.
    streams_completed: int = 0
    #: Streams the backend dropped on purpose (``cut_after``).
    streams_cut: int = 0
    #: Streams whose client went away before their end (a backend stopped under its
    #: streams counts them here too: either way the connection closed first).
    streams_disconnected: int = 0
    #: Chat requests whose client went away before the answer was written: the
    #: disconnected streams, and whole answers or hangs the client gave up on.
    disconnected: int = 0
    #: Answers by injected fault; keys are `FAULT_NAMES`.
    faults: dict[str, int] = field(default_factory=_no_faults)

    def as_dict(self) -> dict[str, Any]:
        """The counters as JSON-ready data."""
        data = dataclasses.asdict(self)
        data["faults"] = dict(self.faults)
        return data

    def reset(self) -> FakeLLMStats:
        """Zero every counter but ``in_flight``; returns the counters as they were."""
        before = dataclasses.replace(self, faults=dict(self.faults))
        for counter in dataclasses.fields(self):
            if counter.name not in ("in_flight", "faults"):
                setattr(self, counter.name, 0)
        self.faults = _no_faults()
        return before
