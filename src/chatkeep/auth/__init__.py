"""API keys: how a request's key is recognised, and what a key may hand on.

* `secrets` — a key's secret (``ck_`` + 256 random bits), its stored hash, its shape.
* `key_cache` — the bounded cache that turns a secret into its `ApiKey` on every request.
* `grants` — the rule that a key never gets more than its creator has.
* `key_service` — creating, listing and revoking keys, for the HTTP routes and the CLI.

The secret is shown once, when a key is created; only its hash is ever stored.
"""
