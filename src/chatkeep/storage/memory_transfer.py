"""Import and retention batches in memory (the `TransferStore` part of `MemoryStore`)."""

from __future__ import annotations


class MemoryTransfer:
    """Mixed into `MemoryStore`: whole-conversation writes."""
