"""chatkeep's middleware, one per module, each a plain ASGI class ``cls(app, **options)``.

They are assembled into the one stack in `chatkeep.app.create_app`; see there for the order.
"""

from chatkeep.api.middleware.auth import (
    ADMIN_SCOPE_KEY,
    KEY_SCOPE_KEY,
    OWNER_SCOPE_KEY,
    AuthMiddleware,
)
from chatkeep.api.middleware.body_limit import BodyLimitMiddleware
from chatkeep.api.middleware.hot_routes import HotRoutes
from chatkeep.api.middleware.metrics import MetricsMiddleware
from chatkeep.api.middleware.stack import StackedFastAPI, build_stack

__all__ = [
    "ADMIN_SCOPE_KEY",
    "KEY_SCOPE_KEY",
    "OWNER_SCOPE_KEY",
    "AuthMiddleware",
    "BodyLimitMiddleware",
    "HotRoutes",
    "MetricsMiddleware",
    "StackedFastAPI",
    "build_stack",
]
