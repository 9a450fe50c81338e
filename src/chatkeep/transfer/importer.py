"""Import a document: check each conversation, write each in one transaction, report.

For every conversation of the document, in order: it is checked whole
(`chatkeep.transfer.format.read_conversation`) before anything of it is written, then
stored with all its messages in one transaction (`TransferStore.import_conversation`).
The answer says, for each, what happened:

* **created** — stored, under its own id;
* **skipped** — the owner already has a conversation with that id: it is left exactly as
  it is (so importing the same file twice stores nothing twice);
* **rejected** — not valid, named twice in the document, or its id is not available (held
  by another owner: that is all the answer says about it); nothing of it was stored.

One conversation's fate never depends on another's. Only one conversation's records are
alive at a time, beside the decoded document itself; checking them runs off the event loop.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from chatkeep.domain.records import Conversation, Message
from chatkeep.errors import ChatkeepError
from chatkeep.settings import LimitSettings
from chatkeep.storage.transfer_store import IdNotAvailable, TransferStore
from chatkeep.transfer.documents import read_head
from chatkeep.transfer.format import (
    ID_PATTERN,
    ConversationRejected,
    read_conversation,
    to_records,
)

_ID = re.compile(ID_PATTERN)

#: Said of a conversation whose id the owner already has.
ALREADY_EXISTS = "a conversation with this id exists; it was left unchanged"
#: Said of the second and later conversations with the same id in one document.
DUPLICATE = "this id appears earlier in the document"


@dataclass(slots=True)
class Refusal:
    """A conversation not created, and why. ``index`` is its place in the document."""

    id: str | None
    reason: str
    index: int


@dataclass(slots=True)
class ImportReport:
    """What an import did with each conversation of the document."""

    created: list[str] = field(default_factory=list)
    skipped: list[Refusal] = field(default_factory=list)
    rejected: list[Refusal] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The report as the API and the CLI show it."""
        return {
            "created": list(self.created),
            "skipped": [{"id": r.id, "reason": r.reason} for r in self.skipped],
            "rejected": [{"id": r.id, "index": r.index, "reason": r.reason} for r in self.rejected],
        }


async def import_document(
    store: TransferStore,
    owner_id: str,
    document: Any,
    limits: LimitSettings,
) -> ImportReport:
    """Import every conversation of a decoded ``document`` for ``owner_id``.

    Raises `InvalidDocument` (nothing imported) when the document itself is not valid.
    """
    head = read_head(document)
    report = ImportReport()
    given = [_given_id(raw) for raw in head.conversations]
    repeated = {cid for cid, n in Counter(given).items() if cid is not None and n > 1}
    seen: set[str] = set()
    for index, raw in enumerate(head.conversations):
        cid = given[index]
        if cid in repeated:
            if cid in seen:
                report.rejected.append(Refusal(cid, DUPLICATE, index))
                continue
            seen.add(cid)
        try:
            # Off the event loop: a conversation may hold thousands of messages to check.
            conversation, messages = await asyncio.to_thread(_records, raw, limits, owner_id)
        except ConversationRejected as exc:
            report.rejected.append(Refusal(cid, str(exc), index))
            continue
        try:
            created = await store.import_conversation(owner_id, conversation, messages)
        except IdNotAvailable as exc:
            report.rejected.append(Refusal(cid, exc.message, index))
            continue
        except ChatkeepError as exc:  # storage trouble: this one failed, say so, go on
            report.rejected.append(Refusal(cid, f"not stored: {exc.message}", index))
            continue
        if created:
            report.created.append(conversation.id)
        else:
            report.skipped.append(Refusal(conversation.id, ALREADY_EXISTS, index))
    return report


def _records(raw: Any, limits: LimitSettings, owner_id: str) -> tuple[Conversation, list[Message]]:
    return to_records(read_conversation(raw, limits), owner_id)


def _given_id(raw: Any) -> str | None:
    """The conversation's id if it is a valid one: a report never echoes anything else."""
    if isinstance(raw, dict):
        cid = raw.get("id")
        if isinstance(cid, str) and _ID.fullmatch(cid):
            return cid
    return None
