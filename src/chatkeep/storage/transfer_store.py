"""The part of the `Store` contract that moves whole conversations in and out.

Export reads a conversation and its messages page by page (the ordinary reads); import
writes one whole conversation in one transaction; the retention policy archives and
deletes idle conversations in bounded batches. Every call is scoped by owner, except the
retention batches, which act for the server on every owner's conversations.
"""

from __future__ import annotations

import abc


class TransferStore(abc.ABC):  # noqa: B024 - its methods are added with the import
    """Whole-conversation writes: import and retention."""
