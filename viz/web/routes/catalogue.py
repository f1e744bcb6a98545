"""The catalogue's pages, for anyone (private adapters for their owner only):

GET  /                               catalogue: search, filters, the domain tree
GET  /adapters/NAME[?version=V]      card, licence, provenance, screening, chain, usage, proof
GET  /documents/ID-or-SHA256         a document's provenance and the adapters trained on it
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import Engine as Database

from viz.errors import InvalidInput
from viz.store.database import session_scope
from viz.web._page import render, visit
from viz.web.charts import line_chart
from viz.web.views.adapter import adapter_page
from viz.web.views.catalogue import CatalogueQuery, catalogue_page, document_page

__all__ = ["CataloguePages", "catalogue_router"]


class CataloguePages:
    """The handlers, over one database; `log_key` signs the checkpoint an adapter's proof shows."""

    def __init__(self, database: Database, log_key: Path) -> None:
        self.database = database
        self.log_key = log_key

    def catalogue(
        self,
        request: Request,
        q: str = "",
        base: str = "",
        tag: str = "",
        licence: str = "",
        price_max: str = "",
        domain: str = "",
    ) -> Response:
        if price_max and not (price_max.isascii() and price_max.isdigit()):
            raise InvalidInput(
                f"price_max {price_max!r} is not a whole number of micro-units per 1k tokens"
            )
        query = CatalogueQuery(
            text=q,
            base=base,
            tag=tag,
            licence=licence,
            price_max=int(price_max) if price_max else None,
            domain=domain,
        )
        with session_scope(self.database) as session:
            seen = visit(request, session)
            page = catalogue_page(session, query, seen.account)
            return render(request, "catalogue.html", seen, page=page)

    def adapter(self, request: Request, name: str, version: str = "") -> Response:
        with session_scope(self.database) as session:
            seen = visit(request, session)
            page = adapter_page(session, name, version, seen.account, self.log_key)
            chart = line_chart({"requests": page.usage}, title=f"requests to {name} per day")
            return render(request, "adapter.html", seen, page=page, chart=chart)

    def document(self, request: Request, reference: str) -> Response:
        with session_scope(self.database) as session:
            seen = visit(request, session)
            page = document_page(session, reference, seen.account)
            return render(request, "document.html", seen, document=page)


def catalogue_router(database: Database, *, log_key: Path) -> APIRouter:
    """The catalogue, adapter and document pages."""
    pages = CataloguePages(database, log_key)
    router = APIRouter(include_in_schema=False)
    router.add_api_route("/", pages.catalogue, methods=["GET"], response_class=HTMLResponse)
    router.add_api_route(
        "/adapters/{name}", pages.adapter, methods=["GET"], response_class=HTMLResponse
    )
    router.add_api_route(
        "/documents/{reference}", pages.document, methods=["GET"], response_class=HTMLResponse
    )
    return router
