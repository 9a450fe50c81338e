"""The SQLite schema, as an ordered list of migrations.

``PRAGMA user_version`` holds the number of migrations applied. Migrations only
ever get appended; one that shipped is never edited.
"""

from __future__ import annotations

import sqlite3

from chatkeep.errors import StorageError

MIGRATIONS: list[str] = [
    # 1: conversations and messages.
    """
    CREATE TABLE conversations (
        id                  TEXT PRIMARY KEY,
        owner_id            TEXT NOT NULL,
        title               TEXT,
        model               TEXT NOT NULL,
        system_prompt       TEXT,
        metadata            TEXT NOT NULL DEFAULT '{}',
        status              TEXT NOT NULL DEFAULT 'active',
        created_at          REAL NOT NULL,
        updated_at          REAL NOT NULL,
        last_activity       REAL NOT NULL,
        message_count       INTEGER NOT NULL DEFAULT 0,
        prompt_tokens       INTEGER NOT NULL DEFAULT 0,
        completion_tokens   INTEGER NOT NULL DEFAULT 0,
        open_reply_to       TEXT,
        summary             TEXT,
        summary_through_seq INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX conversations_by_owner
        ON conversations (owner_id, created_at DESC, id DESC);
    CREATE INDEX conversations_with_open_reply
        ON conversations (open_reply_to) WHERE open_reply_to IS NOT NULL;

    -- Keyed by (conversation, seq) so a history page is one range scan.
    CREATE TABLE messages (
        conversation_id   TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
        seq               INTEGER NOT NULL,
        id                TEXT NOT NULL UNIQUE,
        role              TEXT NOT NULL,
        content           TEXT NOT NULL,
        status            TEXT NOT NULL,
        created_at        REAL NOT NULL,
        client_message_id TEXT,
        reply_to          TEXT,
        reason            TEXT,
        prompt_tokens     INTEGER,
        completion_tokens INTEGER,
        PRIMARY KEY (conversation_id, seq)
    ) WITHOUT ROWID;
    CREATE UNIQUE INDEX messages_by_client_id
        ON messages (conversation_id, client_message_id) WHERE client_message_id IS NOT NULL;
    CREATE INDEX messages_by_reply_to
        ON messages (conversation_id, reply_to) WHERE reply_to IS NOT NULL;
    """,
    # 2: the fingerprint of a send's request, kept with its client_message_id, so a key
    # reused for a different message is refused instead of replayed (older rows keep NULL
    # and replay as before); the error code of an incomplete reply, so a replay reports
    # the same cause as the live answer did.
    """
    ALTER TABLE messages ADD COLUMN fingerprint TEXT;
    ALTER TABLE messages ADD COLUMN reason_code TEXT;
    """,
    # 3: API keys, stored by the hash of their secret (never the secret itself).
    """
    CREATE TABLE api_keys (
        id          TEXT PRIMARY KEY,
        owner_id    TEXT NOT NULL,
        secret_hash TEXT NOT NULL UNIQUE,
        label       TEXT,
        rate        REAL NOT NULL,
        burst       INTEGER NOT NULL,
        max_streams INTEGER NOT NULL,
        priority    INTEGER NOT NULL,
        models      TEXT,
        created_by  TEXT NOT NULL,
        created_at  REAL NOT NULL,
        revoked_at  REAL
    );
    CREATE INDEX api_keys_by_owner ON api_keys (owner_id, created_at DESC, id DESC);
    CREATE INDEX api_keys_newest ON api_keys (created_at DESC, id DESC);
    """,
    # 4: conversations by last activity, for the retention policy's batches.
    """
    CREATE INDEX conversations_by_activity ON conversations (status, last_activity);
    """,
    # 5: key families. A key made by a key belongs to its maker's family: family_id is the
    # root's id (the admin-made ancestor; NULL for a root), and family_rate, family_burst
    # and family_max_streams the root's limits, copied when the key is made, which the
    # whole family shares. Keys made before this get theirs from their created_by chain.
    # Keys by their maker: a revoke reaches every key made from the revoked one.
    """
    ALTER TABLE api_keys ADD COLUMN family_id TEXT;
    ALTER TABLE api_keys ADD COLUMN family_rate REAL;
    ALTER TABLE api_keys ADD COLUMN family_burst INTEGER;
    ALTER TABLE api_keys ADD COLUMN family_max_streams INTEGER;
    CREATE INDEX api_keys_by_creator ON api_keys (created_by);
    WITH RECURSIVE lineage (id, root) AS (
        SELECT id, id FROM api_keys WHERE created_by = 'admin'
        UNION
        SELECT made.id, lineage.root FROM api_keys AS made
        JOIN lineage ON made.created_by = lineage.id
    )
    UPDATE api_keys SET family_id = (
        SELECT lineage.root FROM lineage WHERE lineage.id = api_keys.id
    )
    WHERE created_by != 'admin';
    UPDATE api_keys SET
        family_rate = (SELECT root.rate FROM api_keys AS root WHERE root.id = api_keys.family_id),
        family_burst = (SELECT root.burst FROM api_keys AS root WHERE root.id = api_keys.family_id),
        family_max_streams = (
            SELECT root.max_streams FROM api_keys AS root WHERE root.id = api_keys.family_id
        )
    WHERE family_id IS NOT NULL;
    """,
]


def schema_version(connection: sqlite3.Connection) -> int:
    """How many migrations the database has applied."""
    row = connection.execute("PRAGMA user_version").fetchone()
    return int(row[0])


def migrate(connection: sqlite3.Connection) -> int:
    """Apply the missing migrations, each in its own transaction; return the new version."""
    version = schema_version(connection)
    if version > len(MIGRATIONS):
        raise StorageError(
            f"database schema version {version} is newer than this chatkeep "
            f"({len(MIGRATIONS)}); upgrade chatkeep"
        )
    for number in range(version, len(MIGRATIONS)):
        connection.execute("BEGIN IMMEDIATE")
        try:
            for statement in MIGRATIONS[number].split(";"):
                if statement.strip():
                    connection.execute(statement)
            connection.execute(f"PRAGMA user_version = {number + 1}")
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
    return len(MIGRATIONS)
