"""The dashboards, each its owner's alone (an administrator's too):

GET  /dashboard                      yours (or the login page)
GET  /dashboard/NAME/creator         earnings per adapter and document, payouts
GET  /dashboard/NAME/consumer        balance, usage per adapter, API keys
POST /dashboard/NAME/keys, POST /dashboard/NAME/keys/KEY_ID/revoke
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import Engine as Database
from sqlalchemy.orm import Session

from viz.accounts.keys import create_api_key, revoke_api_key
from viz.serving.settler import wait_settled
from viz.store.database import session_scope
from viz.store.schema import Account
from viz.web._page import Visit, checked_form, own, render, visit
from viz.web.charts import line_chart
from viz.web.views.dashboards import consumer_dashboard, creator_dashboard

__all__ = ["DashboardPages", "dashboards_router"]

SETTLED_WAIT_S = 2.0  # a money page waits this long at most for answers' settlements


class DashboardPages:
    """The handlers, over one database; an account holds at most `api_keys_max` keys."""

    def __init__(self, database: Database, api_keys_max: int) -> None:
        self.database = database
        self.api_keys_max = api_keys_max

    def dashboard(self, request: Request) -> Response:
        with session_scope(self.database) as session:
            seen = visit(request, session)
            if seen.account is None:
                return RedirectResponse("/login?next=/dashboard", status_code=303)
            return RedirectResponse(f"/dashboard/{seen.account.name}/consumer", status_code=303)

    def creator(self, request: Request, name: str) -> Response:
        wait_settled(self.database, SETTLED_WAIT_S)  # answers are settled just after they go out
        with session_scope(self.database) as session:
            seen = visit(request, session)
            account = own(session, seen, name)
            page = creator_dashboard(session, account)
            chart = line_chart(
                page.earnings, title=f"{name}'s earnings per day, per adapter and document"
            )
            return render(request, "creator.html", seen, owner=account, page=page, chart=chart)

    def consumer(self, request: Request, name: str) -> Response:
        wait_settled(self.database, SETTLED_WAIT_S)
        with session_scope(self.database) as session:
            seen = visit(request, session)
            return _consumer_page(request, session, seen, own(session, seen, name))

    def new_key(
        self, request: Request, name: str, label: str = Form(""), csrf_token: str = Form("")
    ) -> Response:
        with session_scope(self.database) as session:
            seen = checked_form(request, session, csrf_token)
            account = own(session, seen, name)
            key = create_api_key(session, account, label=label.strip(), keys_max=self.api_keys_max)
            session.flush()
            return _consumer_page(request, session, seen, account, new_key=key)

    def revoke_key(
        self, request: Request, name: str, key_id: str, csrf_token: str = Form("")
    ) -> Any:
        with session_scope(self.database) as session:
            seen = checked_form(request, session, csrf_token)
            revoke_api_key(session, key_id, account=own(session, seen, name))
        return RedirectResponse(f"/dashboard/{name}/consumer", status_code=303)


def dashboards_router(database: Database, *, api_keys_max: int) -> APIRouter:
    """The creator and consumer dashboards and the API key forms."""
    pages = DashboardPages(database, api_keys_max)
    router = APIRouter(include_in_schema=False)
    router.add_api_route("/dashboard", pages.dashboard, methods=["GET"])
    router.add_api_route(
        "/dashboard/{name}/creator", pages.creator, methods=["GET"], response_class=HTMLResponse
    )
    router.add_api_route(
        "/dashboard/{name}/consumer", pages.consumer, methods=["GET"], response_class=HTMLResponse
    )
    router.add_api_route(
        "/dashboard/{name}/keys", pages.new_key, methods=["POST"], response_class=HTMLResponse
    )
    router.add_api_route(
        "/dashboard/{name}/keys/{key_id}/revoke", pages.revoke_key, methods=["POST"]
    )
    return router


def _consumer_page(
    request: Request, session: Session, seen: Visit, account: Account, **extra: Any
) -> Response:
    page = consumer_dashboard(session, account)
    chart = line_chart({"spent": page.spending}, title=f"{account.name}'s spending per day")
    response = render(
        request, "consumer.html", seen, owner=account, page=page, chart=chart, **extra
    )
    response.headers["Cache-Control"] = "no-store"  # a new key's secret is on this page
    return response
