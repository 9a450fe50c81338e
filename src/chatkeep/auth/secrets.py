"""A key's secret: made random, stored hashed, recognised by its shape.

A secret is ``ck_`` followed by 32 random bytes in URL-safe base64 (43 characters):
256 bits, so nobody guesses one and nobody reverses its hash. That is why the stored
hash is a plain SHA-256 and not a slow password hash (bcrypt, scrypt, argon2): those
exist to make guessing a *low-entropy* password from its hash expensive; against 256
random bits there is nothing to slow down, and the hash is computed on every request
that misses the key cache, where a slow hash would cost milliseconds.

Keys are found by their hash (an index lookup), never by comparing secrets, so no
comparison of a secret leaks timing: what a lookup's time could reveal is a prefix of a
SHA-256, which says nothing about any secret.
"""

from __future__ import annotations

import hashlib
import re
import secrets

#: Every secret starts with this: it tells a chatkeep key from other credentials at a
#: glance (and lets secret scanners find leaked ones).
PREFIX = "ck_"

_RANDOM_BYTES = 32  # 256 bits
_SHAPE = re.compile(r"ck_[A-Za-z0-9_-]{43}")


def new_secret() -> str:
    """A new secret: `PREFIX` and 256 random bits from the OS's CSPRNG."""
    return PREFIX + secrets.token_urlsafe(_RANDOM_BYTES)


def hash_secret(secret: str) -> str:
    """The hex SHA-256 of ``secret``: what is stored and looked up, never the secret."""
    # surrogatepass: any str hashes (a lone surrogate from a bad header is not a crash);
    # such a string is not a key, so its hash just finds nothing.
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def looks_like_key(text: str) -> bool:
    """True when ``text`` has the shape of a secret made by `new_secret` (no lookup)."""
    return len(text) == len(PREFIX) + 43 and _SHAPE.fullmatch(text) is not None
