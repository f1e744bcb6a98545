"""The transparency log's page, for anyone:

GET  /log[?entry=N]                  the latest signed checkpoint; verify one entry
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import Engine as Database

from viz.errors import InvalidInput
from viz.store.database import session_scope
from viz.web._page import render, visit
from viz.web.views.log import log_page

__all__ = ["LogPages", "log_router"]


class LogPages:
    """The handler, over one database; `log_key` signs the checkpoint it shows."""

    def __init__(self, database: Database, log_key: Path) -> None:
        self.database = database
        self.log_key = log_key

    def log(self, request: Request, entry: str = "") -> Response:
        if entry and not (entry.isascii() and entry.isdigit()):
            raise InvalidInput(f"entry {entry!r} is not a log index (a whole number from 0)")
        with session_scope(self.database) as session:
            seen = visit(request, session)
            page = log_page(session, self.log_key, int(entry) if entry else None)
            return render(request, "log.html", seen, page=page)


def log_router(database: Database, *, log_key: Path) -> APIRouter:
    """The log's page."""
    pages = LogPages(database, log_key)
    router = APIRouter(include_in_schema=False)
    router.add_api_route("/log", pages.log, methods=["GET"], response_class=HTMLResponse)
    return router
