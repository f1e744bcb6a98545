"""The marketplace's pages, served by `viz serve` beside the API: server-rendered, no build step.

`add_pages` mounts the stylesheet and one router per page group (`viz.web.routes`), each over
its views (`viz.web.views`):

    catalogue    GET /, /adapters/NAME, /documents/ID-or-SHA256
    log          GET /log
    account      GET|POST /login, POST /logout, GET|POST /signup
    dashboards   GET /dashboard, /dashboard/NAME/creator, /dashboard/NAME/consumer; API keys
    admin        GET /admin/takedowns
    publish      GET|POST /publish
    playground   GET|POST /playground

Reading works without JavaScript (there is none); every POST needs its form's CSRF token. The
app answers a `VizError` raised on a page with `error_page`, and tells pages from the API with
`is_page`.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy import Engine as Database

from viz.config import Settings
from viz.errors import VizError
from viz.web._page import STATIC_DIR, Visit, secure, templates
from viz.web.routes import (
    account_router,
    admin_router,
    catalogue_router,
    dashboards_router,
    log_router,
    playground_router,
    publish_router,
)

__all__ = ["API_PREFIXES", "add_pages", "error_page", "is_page"]

API_PREFIXES = ("/v1/", "/health", "/metrics", "/docs", "/redoc", "/openapi.json")


def is_page(request: Request) -> bool:
    """Is this a page (answered in HTML) rather than the API (answered in JSON)?"""
    return not request.url.path.startswith(API_PREFIXES)


def error_page(request: Request, error: VizError) -> Response:
    """A VizError on a page: the same message and HTTP status the API would give, as a page
    (a logged-out visitor asking for a page that needs a login is sent to log in)."""
    if error.http_status == 401 and request.method == "GET":
        return RedirectResponse(f"/login?next={request.url.path}", status_code=303)
    response = templates.TemplateResponse(
        request,
        "error.html",
        {"visit": Visit(None, "", None), "status": error.http_status, "message": error.message},
        status_code=error.http_status,
    )
    return secure(response)


def add_pages(app: FastAPI, settings: Settings, database: Database) -> None:
    """Serve the marketplace's pages and their stylesheet from `app`."""
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    log_key = settings.log_key_path
    app.include_router(catalogue_router(database, log_key=log_key))
    app.include_router(log_router(database, log_key=log_key))
    app.include_router(account_router(database))
    app.include_router(dashboards_router(database, api_keys_max=settings.api_keys_per_account_max))
    app.include_router(admin_router(database))
    app.include_router(
        publish_router(database, blobs_dir=settings.blobs_dir, models_dir=settings.models_dir)
    )
    app.include_router(playground_router(database))
