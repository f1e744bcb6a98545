"""The marketplace's routers, one per page group; `viz.web.pages.add_pages` mounts them all.

Each module holds its group's handlers as methods of one class over the database (and the few
settings the group needs, as plain arguments) and a `<group>_router(...)` that routes to them:
`catalogue` (catalogue, adapter and document pages), `log`, `account` (login, logout, signup),
`dashboards` (creator, consumer, API keys), `admin` (takedowns), `publish`, `playground`.
"""

from viz.web.routes.account import account_router
from viz.web.routes.admin import admin_router
from viz.web.routes.catalogue import catalogue_router
from viz.web.routes.dashboards import dashboards_router
from viz.web.routes.log import log_router
from viz.web.routes.playground import playground_router
from viz.web.routes.publish import publish_router

__all__ = [
    "account_router",
    "admin_router",
    "catalogue_router",
    "dashboards_router",
    "log_router",
    "playground_router",
    "publish_router",
]
