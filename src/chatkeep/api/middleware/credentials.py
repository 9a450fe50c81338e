"""One reading of a request's credential, whichever header it came in.

Clients send a key as ``Authorization: Bearer <key>`` (the openai SDK, most HTTP clients)
or ``x-api-key: <key>`` (Anthropic-style clients, some gateways). Both are read here and
nowhere else, so the admin token, the metrics token and API keys are all found the same
way. Two different credentials in one request are refused rather than guessed between.
"""

from __future__ import annotations

from collections.abc import Iterable

#: The request carried two different credentials.
AMBIGUOUS = "ambiguous"


class Credential:
    """What a request presented: ``secret`` (or ``None``), or ``problem`` when unreadable."""

    __slots__ = ("problem", "secret")

    def __init__(self, secret: str | None = None, problem: str | None = None) -> None:
        self.secret = secret
        self.problem = problem


NO_CREDENTIAL = Credential()


def read_credential(headers: Iterable[tuple[bytes, bytes]]) -> Credential:
    """The credential in ``headers`` (raw ASGI header pairs, names in lower case)."""
    found: bytes | None = None
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.strip().partition(b" ")
            if scheme.lower() != b"bearer" or not token.strip():
                return Credential(problem="the Authorization header must be 'Bearer <key>'")
            value = token
        elif name != b"x-api-key":
            continue
        value = value.strip()
        if not value:
            continue  # an empty x-api-key (a client's unset variable) says nothing
        if found is not None and found != value:
            return Credential(problem="the request carries two different credentials")
        found = value
    if found is None:
        return NO_CREDENTIAL
    try:
        return Credential(found.decode("ascii"))
    except UnicodeDecodeError:
        return Credential(problem="a credential is plain ASCII")
