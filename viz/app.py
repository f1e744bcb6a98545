"""The FastAPI app `viz serve` runs: the OpenAI-compatible API (`viz.serving`) and the
marketplace's pages (`viz.web`) over one database.

    app = create_app(Settings(), open_database(url))

Errors are answered in one place each: `viz.serving.responses.error_response` (an OpenAI error
body) for the API's paths, `viz.web.pages.error_page` for the pages; both take the status from
the error's class (`viz.errors`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from sqlalchemy import Engine as Database
from starlette.exceptions import HTTPException as StarletteHTTPException

from viz.config import Settings
from viz.errors import InvalidInput, NotFound, VizError
from viz.serving.protocol import REFUSED
from viz.serving.responses import error_response
from viz.serving.routes import RequestHeaders, api_router
from viz.serving.server import Server
from viz.web.pages import add_pages, error_page, is_page

__all__ = ["create_app"]

log = logging.getLogger("viz.serving")


def create_app(settings: Settings, database: Database) -> FastAPI:
    """The API and the pages over `database`, generating with models from `settings.models_dir`."""
    server = Server(settings, database)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        await asyncio.to_thread(server.close)  # finish or cancel in-flight requests

    app = FastAPI(
        title="Viz",
        version="0.1.0",
        description="OpenAI-compatible API over bases and composable, metered LoRA adapters.",
        lifespan=lifespan,
    )
    app.state.server = server
    _add_error_handlers(app)
    app.add_middleware(RequestHeaders, server=server)
    add_pages(app, settings, database)  # the marketplace's pages (viz.web)
    app.include_router(api_router(server))
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's spec, saying what the API really answers: a bad body is a 400 in OpenAI's error
    shape (documented on each operation), not FastAPI's 422."""
    if app.openapi_schema is None:
        schema = FastAPI.openapi(app)
        for operations in schema["paths"].values():
            for operation in operations.values():
                operation.get("responses", {}).pop("422", None)
        for name in ("HTTPValidationError", "ValidationError"):
            schema.get("components", {}).get("schemas", {}).pop(name, None)
        app.openapi_schema = schema
    return app.openapi_schema


def _add_error_handlers(app: FastAPI) -> None:
    """Answer a VizError, a bad body, a missing route or a bug as a page or as the API does."""

    def answer(request: Request, error: VizError, param: str | None = None) -> Response:
        if is_page(request):
            return error_page(request, error)
        return error_response(request, error, param=param)

    @app.exception_handler(VizError)
    async def viz_error(request: Request, error: VizError) -> Response:
        return answer(request, error)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> Response:
        log.exception("unexpected error", exc_info=error)
        return answer(
            request,
            VizError(f"internal error ({type(error).__name__}); it was logged, retry later"),
        )

    @app.exception_handler(RequestValidationError)
    async def bad_body(request: Request, error: RequestValidationError) -> Response:
        first = error.errors()[0]
        param = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        if first.get("type") == "extra_forbidden":  # a field Viz does not implement
            field = param.rsplit(".", 1)[-1]
            reason = REFUSED.get(field, "Viz does not know this field")
            message = (
                f"{param} is not supported: {reason} (the README's table of OpenAI fields "
                "lists what is)"
            )
            return answer(request, InvalidInput(message), param=param)
        return answer(request, InvalidInput(f"{param}: {first.get('msg')}"), param=param)

    @app.exception_handler(StarletteHTTPException)
    async def no_route(request: Request, error: StarletteHTTPException) -> Response:
        if error.status_code == 404:
            missing = NotFound(f"nothing at {request.url.path}; the catalogue is at /")
            return answer(request, missing)
        if is_page(request):
            return await http_exception_handler(request, error)
        # the API answers in OpenAI's shape even before a body is parsed (a body that is not
        # JSON, a method a path does not take)
        refused = InvalidInput(
            f"{error.detail}: send a JSON object with Content-Type: application/json"
            if error.status_code == 400
            else str(error.detail)
        )
        refused.http_status = error.status_code
        return error_response(request, refused)
