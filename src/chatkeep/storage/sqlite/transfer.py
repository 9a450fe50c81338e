"""Import and retention batches in SQLite (the `TransferStore` part of the store)."""

from __future__ import annotations


class SQLiteTransfer:
    """Mixed into `SQLiteStore`: whole-conversation writes."""
