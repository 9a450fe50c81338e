"""How a reply ended, and the one mapping from that to what a client is told.

A reply ends in one of three ways:

* **complete**: the assistant message is committed with ``status="complete"``;
* **incomplete**: the assistant message is committed with ``status="incomplete"`` and a
  reason (the backend failed, the stream was cut, a timeout, a cancel, a shutdown);
* **unstored**: the assistant message could not be committed at all (storage failed);
  the user message stays, and recovery closes the reply later.

The live answer (the reply just ran) and the replayed one (a retried send, a resume after
the stream is gone) are both built here from a `ReplyOutcome`, so a failed reply reads the
same however the client comes to ask about it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chatkeep.domain.records import Message
from chatkeep.errors import ChatkeepError, ReplyIncomplete, status_for_code

#: The code of an incomplete reply whose cause was not recorded (stored before causes were).
INCOMPLETE = ReplyIncomplete.code


@dataclass(frozen=True, slots=True)
class ReplyOutcome:
    """The end of one reply: the committed assistant message, or why there is none."""

    message: Message | None
    #: Machine-readable cause when the reply did not complete (an error code).
    code: str | None = None
    #: Human-readable cause, as stored with an incomplete message.
    reason: str | None = None

    @classmethod
    def committed(cls, message: Message) -> ReplyOutcome:
        """The outcome of a reply as storage has it (live or replayed alike).

        An incomplete message carries the code of its cause (``reason_code``); one stored
        before causes were kept reads as `INCOMPLETE`.
        """
        if message.status == "complete":
            return cls(message)
        return cls(
            message,
            code=message.reason_code or INCOMPLETE,
            reason=message.reason or "the reply did not finish",
        )

    @classmethod
    def unstored(cls, error: ChatkeepError) -> ReplyOutcome:
        """A reply whose assistant message could not be committed."""
        return cls(None, code=error.code, reason=error.message)

    @property
    def complete(self) -> bool:
        return self.message is not None and self.code is None

    @property
    def status_code(self) -> int:
        """The HTTP status of a JSON answer carrying this outcome."""
        return 200 if self.code is None else status_for_code(self.code)

    def error_body(self) -> dict[str, Any]:
        """``{"error": {"code", "message"}}`` for an outcome that is not complete."""
        return {"error": {"code": self.code, "message": self.reason}}
