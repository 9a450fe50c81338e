"""What a request's API key allows it: which models, and how early in the admission line.

The routes read the key the auth layer put in the scope (`request_key`); without one
(``auth=none``, the admin token) nothing is restricted.

* Models: a key with ``models`` set sees and uses only those. Any other model is answered
  exactly as a model that does not exist (`UnknownModel`, listing the key's models only),
  so a key learns nothing of the models it may not use.
* Priority: a request may ask to run later than its key's priority, never ahead of it.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.requests import Request

from chatkeep.api.middleware.auth import KEY_SCOPE_KEY
from chatkeep.domain.keys import ApiKey
from chatkeep.errors import UnknownModel


def request_key(request: Request) -> ApiKey | None:
    """The API key the request came with, if any."""
    key: ApiKey | None = request.scope.get(KEY_SCOPE_KEY)
    return key


def effective_priority(key: ApiKey | None, requested: int = 0) -> int:
    """The priority a request runs at: the later of what it asked and its key's."""
    return requested if key is None else max(requested, key.limits.priority)


def check_model(key: ApiKey | None, model: str) -> None:
    """Raise `UnknownModel` when ``key`` may not use ``model``."""
    allowed = None if key is None else key.limits.models
    if allowed is not None and model not in allowed:
        raise UnknownModel(f"unknown model {model!r}; known models: {_listed(allowed)}")


def default_model(key: ApiKey | None, configured_default: str) -> str:
    """The model of a conversation created without one.

    The configured default, unless the key may not use it: then the first of the key's
    models, so that a client that never names a model keeps working with its key.
    """
    allowed = None if key is None else key.limits.models
    if allowed is None or configured_default in allowed or not allowed:
        return configured_default
    return allowed[0]


def visible_models(key: ApiKey | None, names: Iterable[str]) -> list[str]:
    """``names`` (the configured models, in order) that ``key`` may use."""
    allowed = None if key is None else key.limits.models
    if allowed is None:
        return list(names)
    return [name for name in names if name in allowed]


#: How many names an `UnknownModel` message lists before "...", as the registry does.
_LISTED_NAMES = 20


def _listed(names: tuple[str, ...]) -> str:
    ordered = sorted(names)
    listed = ", ".join(ordered[:_LISTED_NAMES])
    if not ordered:
        return "(none)"
    return listed + (", ..." if len(ordered) > _LISTED_NAMES else "")
