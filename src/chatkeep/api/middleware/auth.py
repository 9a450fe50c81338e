"""Who a request acts for, decided once, before any route runs (hot routes included).

With ``CHATKEEP_AUTH=none`` every request acts for the one configured owner. With
``keys``, every route except the public ones (`PUBLIC_PATHS`) needs a credential
(`chatkeep.api.middleware.credentials`):

* an API key → ``scope["chatkeep.owner"]`` is its owner and ``scope["chatkeep.key"]`` the
  key, which the routes and the quota layer below read;
* ``/admin/*`` wants the admin token (a user key there is ``403``), ``/metrics`` the admin
  or the metrics token; with neither token set, those stay with direct loopback clients;
* anything else — no credential, an unknown or revoked key — is ``401`` with the JSON
  error shape, and counts as a failed attempt of the client's address: past
  ``auth_failed_per_minute`` that address gets ``429`` before its keys are even looked at,
  except a key already in the cache (a client that was working keeps working).

Tokens are compared in constant time; keys are found by the hash of their secret, through
a bounded cache, so a known key costs a dict lookup. ``scope["chatkeep.admin"]`` tells the
admin routes that the admin token was shown (in either mode). Whatever a scope carried
under these names on the way in is overwritten: nothing is taken from whoever built it.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from starlette.types import ASGIApp, Receive, Scope, Send

from chatkeep.api.errors import chatkeep_error_response
from chatkeep.api.middleware.credentials import read_credential
from chatkeep.domain.keys import ApiKey
from chatkeep.errors import ChatkeepError, Forbidden, RateLimited, Unauthorized

logger = logging.getLogger("chatkeep.auth")

#: The scope key holding the owner id of a request.
OWNER_SCOPE_KEY = "chatkeep.owner"
#: The scope key holding the request's `ApiKey` (``None``: no key, as in ``auth=none``).
KEY_SCOPE_KEY = "chatkeep.key"
#: The scope key set to ``True`` when the request showed the admin token.
ADMIN_SCOPE_KEY = "chatkeep.admin"

#: Answered without a credential in every mode: probes and the API's own documentation.
PUBLIC_PATHS = frozenset(
    {"/healthz", "/readyz", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
)

KeyLookup = Callable[[str], Awaitable[ApiKey | None]]


class AttemptLimiter(Protocol):
    """Counts failed attempts per client address (`chatkeep.quotas.failures`)."""

    def retry_after(self, address: str) -> float | None: ...

    def record(self, address: str) -> None: ...


class AuthMiddleware:
    """``AuthMiddleware(app, mode=..., default_owner=..., ...)``; see the module docstring."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        mode: str,
        default_owner: str,
        admin_token: str | None,
        metrics_token: str | None = None,
        lookup: KeyLookup | None = None,
        known: Callable[[str], ApiKey | None] = lambda secret: None,
        attempts: AttemptLimiter | None = None,
        is_direct_loopback: Callable[[Scope], bool] = lambda scope: False,
    ) -> None:
        if mode == "keys" and lookup is None:
            raise ValueError("auth mode 'keys' needs a key lookup")
        self.app = app
        self.keys_mode = mode == "keys"
        self.default_owner = default_owner
        self.admin_token = admin_token.encode() if admin_token else None
        self.metrics_token = metrics_token.encode() if metrics_token else None
        self.lookup = lookup
        self.known = known
        self.attempts = attempts
        self.is_direct_loopback = is_direct_loopback

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        scope[KEY_SCOPE_KEY] = None
        scope[ADMIN_SCOPE_KEY] = False
        scope.pop(OWNER_SCOPE_KEY, None)
        if not self.keys_mode:
            scope[OWNER_SCOPE_KEY] = self.default_owner
            credential = read_credential(scope["headers"])
            scope[ADMIN_SCOPE_KEY] = self._is_token(credential.secret, self.admin_token)
            await self.app(scope, receive, send)
            return
        if scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        try:
            await self._identify(scope)
        except ChatkeepError as refusal:
            response = chatkeep_error_response(refusal)
            if refusal.status_code == 401:
                response.headers["WWW-Authenticate"] = "Bearer"
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _identify(self, scope: Scope) -> None:
        """Put the request's owner (and key, or admin flag) in ``scope``, or raise why not."""
        address = _client_address(scope)
        credential = read_credential(scope["headers"])
        wait = self.attempts.retry_after(address) if self.attempts is not None else None
        if wait is not None and not self._is_any_token(credential.secret):
            # The address is refused for its failures (one client guessing, or a stale key
            # behind a shared NAT or proxy): a key already known to be good still gets in,
            # anything else is refused without being looked up.
            key = self.known(credential.secret) if credential.secret else None
            if key is None or scope["path"].startswith("/admin") or scope["path"] == "/metrics":
                raise RateLimited(
                    "too many failed attempts to authenticate from this address; retry later",
                    wait,
                )
            scope[OWNER_SCOPE_KEY] = key.owner_id
            scope[KEY_SCOPE_KEY] = key
            return
        if credential.problem is not None:
            self._failed(address, credential.problem)
            raise Unauthorized(credential.problem)
        secret = credential.secret
        path: str = scope["path"]
        admin_route = path == "/admin" or path.startswith("/admin/")
        if self._is_token(secret, self.admin_token):
            scope[ADMIN_SCOPE_KEY] = True
            if admin_route or path == "/metrics":
                return
            raise Forbidden(
                "the admin token is not an API key: create one with `chatkeep keys create` "
                "or POST /admin/keys"
            )
        if path == "/metrics" and self._is_token(secret, self.metrics_token):
            return
        if secret is None:
            if (admin_route or path == "/metrics") and self._loopback_may_enter(scope, path):
                return
            self._failed(address, "no credential")
            raise Unauthorized(
                "this server needs an API key: 'Authorization: Bearer <key>' or 'x-api-key: <key>'"
            )
        assert self.lookup is not None
        key = await self.lookup(secret) if _plausible(secret) else None
        if key is None:
            self._failed(address, "an unknown or revoked key")
            raise Unauthorized("the API key is not valid (unknown or revoked)")
        if admin_route or path == "/metrics":
            raise Forbidden(f"{'/admin' if admin_route else '/metrics'} needs the admin token")
        scope[OWNER_SCOPE_KEY] = key.owner_id
        scope[KEY_SCOPE_KEY] = key

    def _is_any_token(self, secret: str | None) -> bool:
        return self._is_token(secret, self.admin_token) or self._is_token(
            secret, self.metrics_token
        )

    def _loopback_may_enter(self, scope: Scope, path: str) -> bool:
        """Without their token configured, admin and metrics stay with direct loopback."""
        if path == "/metrics" and (self.admin_token or self.metrics_token):
            return False
        if path != "/metrics" and self.admin_token:
            return False
        return self.is_direct_loopback(scope)

    def _failed(self, address: str, why: str) -> None:
        # Said without the credential itself: a secret never reaches a log line (the
        # repeat filter folds a flood of these into a few lines).
        logger.warning("authentication failed from %s: %s", address, why)
        if self.attempts is not None:
            self.attempts.record(address)

    @staticmethod
    def _is_token(secret: str | None, token: bytes | None) -> bool:
        if secret is None or token is None:
            return False
        return hmac.compare_digest(secret.encode(), token)


#: Longest credential worth hashing: a key is 46 characters; anything far longer is not one.
MAX_CREDENTIAL_CHARS = 256


def _plausible(secret: str) -> bool:
    return 0 < len(secret) <= MAX_CREDENTIAL_CHARS


def _client_address(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"
