"""chatkeep's middleware, one per module, each a plain ASGI class ``cls(app, **options)``.

They are assembled into the one stack in `chatkeep.app.create_app`; see there for the order.
"""

from chatkeep.api.middleware.body_limit import BodyLimitMiddleware
from chatkeep.api.middleware.hot_routes import HotRoutes
from chatkeep.api.middleware.metrics import MetricsMiddleware
from chatkeep.api.middleware.owner import OWNER_SCOPE_KEY, OwnerMiddleware
from chatkeep.api.middleware.stack import StackedFastAPI, build_stack

__all__ = [
    "OWNER_SCOPE_KEY",
    "BodyLimitMiddleware",
    "HotRoutes",
    "MetricsMiddleware",
    "OwnerMiddleware",
    "StackedFastAPI",
    "build_stack",
]
