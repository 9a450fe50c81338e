"""The errors chatkeep raises, and the HTTP status each one maps to.

Driver errors (sqlite3, asyncpg, aiohttp) never leave the backend that caused
them: each backend translates them into one of these.

    ChatkeepError                      500  internal
    ├── NotFound                       404  not_found
    ├── InvalidRequest                 422  invalid_request
    │   └── UnknownModel               422  unknown_model
    ├── PayloadTooLarge                413  payload_too_large
    ├── Conflict                       409  conflict
    │   ├── ReplyInProgress            409  reply_in_progress
    │   ├── IdempotencyKeyReused       409  idempotency_key_reused
    │   └── IdNotAvailable             409  id_not_available (an imported id held elsewhere)
    ├── Unauthorized                   401  unauthorized
    ├── Forbidden                      403  forbidden      (a user key on an admin route)
    ├── Overloaded                     503  overloaded     (carries Retry-After)
    │   ├── RateLimited                429  rate_limited   (one caller over its own limit)
    │   └── ShuttingDown               503  shutdown       (a reply cut by a server stop)
    ├── ReplyCancelled                 499  cancelled      (a reply stopped by its client)
    ├── StorageError                   503  storage_unavailable
    │   ├── DataDirLocked              503  data_dir_locked  (another process holds it)
    │   └── DatabaseDamaged            503  database_damaged (found at startup)
    └── ProviderError                  502  provider_error
        ├── ReplyIncomplete            502  reply_incomplete (a stored reply's unknown cause)
        ├── ProviderUnavailable        502  provider_unavailable
        ├── ProviderTimeout            504  provider_timeout
        └── StreamCut                  502  stream_cut
"""

from __future__ import annotations


class ChatkeepError(Exception):
    """Base of every error chatkeep raises on purpose."""

    status_code = 500
    code = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(ChatkeepError):
    status_code = 404
    code = "not_found"


class InvalidRequest(ChatkeepError):
    status_code = 422
    code = "invalid_request"


class UnknownModel(InvalidRequest):
    code = "unknown_model"


class PayloadTooLarge(ChatkeepError):
    status_code = 413
    code = "payload_too_large"


class Conflict(ChatkeepError):
    status_code = 409
    code = "conflict"


class ReplyInProgress(Conflict):
    code = "reply_in_progress"


class IdempotencyKeyReused(Conflict):
    """A client message id (idempotency key) sent again with a different request."""

    code = "idempotency_key_reused"


class IdNotAvailable(Conflict):
    """An imported id is held by another owner's conversation (or another conversation)."""

    code = "id_not_available"


class Unauthorized(ChatkeepError):
    status_code = 401
    code = "unauthorized"


class Forbidden(ChatkeepError):
    """The credential is valid but may not do this (a user key on an admin route)."""

    status_code = 403
    code = "forbidden"


class Overloaded(ChatkeepError):
    """The server is over a bound; the client should retry after a pause."""

    status_code = 503
    code = "overloaded"

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RateLimited(Overloaded):
    """One caller is over its own limit (rate, open streams, queued replies); others are not."""

    status_code = 429
    code = "rate_limited"


class ShuttingDown(Overloaded):
    """The server is stopping; the client should retry (on this or another instance)."""

    code = "shutdown"


class ReplyCancelled(ChatkeepError):
    """The client cancelled the reply; what was generated so far is stored."""

    # 499: the status proxies use for "client closed request"; never a server fault.
    status_code = 499
    code = "cancelled"


class StorageError(ChatkeepError):
    status_code = 503
    code = "storage_unavailable"


class DataDirLocked(StorageError):
    """Another process uses the data directory; the store refuses to open it."""

    code = "data_dir_locked"


class DatabaseDamaged(StorageError):
    """The database failed its integrity check; the store refuses to open it."""

    code = "database_damaged"


class ProviderError(ChatkeepError):
    """A model backend failed; `reason` is stored with an incomplete reply.

    ``upstream_status`` is the HTTP status the backend answered, when it answered one;
    ``retry_after`` the seconds its ``Retry-After`` asked for (the provider pool keeps
    a backend out of rotation that long).
    """

    status_code = 502
    code = "provider_error"

    def __init__(
        self,
        message: str,
        *,
        upstream_status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.upstream_status = upstream_status
        self.retry_after = retry_after


class ReplyIncomplete(ProviderError):
    """A reply that ended incomplete, for a cause not recorded with it."""

    code = "reply_incomplete"


class ProviderUnavailable(ProviderError):
    code = "provider_unavailable"


class ProviderTimeout(ProviderError):
    status_code = 504
    code = "provider_timeout"


class StreamCut(ProviderError):
    code = "stream_cut"


def status_for_code(code: str) -> int:
    """The HTTP status of an error code (500 for a code no error class declares)."""
    pending: list[type[ChatkeepError]] = [ChatkeepError]
    while pending:
        cls = pending.pop()
        if cls.code == code:
            return cls.status_code
        pending.extend(cls.__subclasses__())
    return 500
