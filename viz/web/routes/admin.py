"""The administrators' pages:

GET  /admin/takedowns                takedowns and restores (admins only)
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import Engine as Database

from viz.errors import Forbidden
from viz.store.database import session_scope
from viz.web._page import render, visit
from viz.web.views.admin import takedowns_page

__all__ = ["AdminPages", "admin_router"]


class AdminPages:
    """The handlers, over one database."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def takedowns(self, request: Request) -> Response:
        with session_scope(self.database) as session:
            seen = visit(request, session)
            if seen.account is None:
                return RedirectResponse("/login?next=/admin/takedowns", status_code=303)
            if not seen.account.is_admin:
                raise Forbidden("only administrators see takedowns")
            return render(request, "takedowns.html", seen, takedowns=takedowns_page(session))


def admin_router(database: Database) -> APIRouter:
    """The takedowns page."""
    pages = AdminPages(database)
    router = APIRouter(include_in_schema=False)
    router.add_api_route(
        "/admin/takedowns", pages.takedowns, methods=["GET"], response_class=HTMLResponse
    )
    return router
