"""Key secrets: random, recognisable by shape, stored only as a hash."""

from __future__ import annotations

import hashlib

from chatkeep.auth.secrets import PREFIX, hash_secret, looks_like_key, new_secret


def test_a_new_secret_carries_256_random_bits_after_its_prefix() -> None:
    secrets = {new_secret() for _ in range(200)}
    assert len(secrets) == 200
    for secret in secrets:
        assert secret.startswith(PREFIX)
        # 32 bytes in URL-safe base64 without padding: 43 characters.
        assert len(secret) == len(PREFIX) + 43
        assert looks_like_key(secret)


def test_the_hash_is_the_hex_sha256_and_differs_per_secret() -> None:
    secret = new_secret()
    assert hash_secret(secret) == hashlib.sha256(secret.encode()).hexdigest()
    assert hash_secret(secret) != hash_secret(new_secret())
    assert secret not in hash_secret(secret)


def test_anything_else_does_not_look_like_a_key() -> None:
    good = new_secret()
    for text in [
        "",
        PREFIX,
        good[:-1],
        good + "A",
        "sk_" + good[3:],
        good[:10] + "+" + good[11:],  # standard base64, not URL-safe
        good[:10] + "é" + good[11:],
        good[:10] + " " + good[11:],
        "ck_" + "A" * 43 + "\n",
        "x" * 10_000,
    ]:
        assert not looks_like_key(text), text


def test_any_string_hashes_even_one_that_is_not_valid_unicode() -> None:
    assert len(hash_secret("ck_\ud800")) == 64
