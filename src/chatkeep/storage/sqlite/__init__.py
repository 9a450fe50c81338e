"""The SQLite store, in modules of one idea each.

* `store` — `SQLiteStore`, the `Store` backend over one database file.
* `connection` — a connection owned by one thread, driven from the event loop.
* `group_commit` — concurrent writes sharing one transaction and one fsync.
* `statements` — the SQL that runs inside a transaction.
* `rows` — rows turned into records and back.
* `schema` — the migrations.
* `errors` — driver errors translated into chatkeep's, in one place.
* `lock` — the exclusive lock on the data directory.
"""

from chatkeep.storage.sqlite.store import DATABASE_FILE, SQLiteStore

__all__ = ["DATABASE_FILE", "SQLiteStore"]
