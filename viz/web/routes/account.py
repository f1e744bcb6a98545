"""Logging in and out, and signing up:

    GET  /login, POST /login, POST /logout, GET /signup, POST /signup

Every post checks its form's CSRF token; failed logins are throttled (`viz.web.auth.Throttle`)
and new accounts are capped per hour, both per app.
"""

from __future__ import annotations

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import Engine as Database

from viz.accounts.accounts import create_account
from viz.errors import RateLimited, VizError
from viz.store.database import session_scope
from viz.store.windows import hit
from viz.web._page import SESSION_COOKIE, checked_form, local_target, render, secure, visit
from viz.web.auth import Throttle, log_in, log_out, set_password

__all__ = ["SESSION_HOURS", "SIGNUPS_PER_HOUR_MAX", "AccountPages", "account_router"]

SIGNUPS_PER_HOUR_MAX = 30
SESSION_HOURS = 12  # the session cookie's max-age


class AccountPages:
    """The handlers, over one database; logins and sign-ups are limited in the database."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.throttle = Throttle()

    def login_form(self, request: Request, next: str = "/dashboard") -> Response:
        with session_scope(self.database) as session:
            return render(request, "login.html", visit(request, session), next=local_target(next))

    def login(
        self,
        request: Request,
        name: str = Form(""),
        password: str = Form(""),
        csrf_token: str = Form(""),
        next: str = Form("/dashboard"),
    ) -> Response:
        with session_scope(self.database) as session:
            seen = checked_form(request, session, csrf_token)
            try:
                token = log_in(session, name.strip(), password, throttle=self.throttle)
            except VizError as error:  # wrong password, or throttled
                return render(
                    request,
                    "login.html",
                    seen,
                    status=error.http_status,
                    next=local_target(next),
                    error=error.message,
                    name=name,
                )
        response = RedirectResponse(local_target(next), status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            token,
            max_age=SESSION_HOURS * 3600,
            httponly=True,
            samesite="lax",
            secure=request.url.scheme == "https",
        )
        return secure(response)

    def logout(self, request: Request, csrf_token: str = Form("")) -> Response:
        with session_scope(self.database) as session:
            checked_form(request, session, csrf_token)
            log_out(session, request.cookies.get(SESSION_COOKIE))
        response = RedirectResponse("/", status_code=303)
        response.delete_cookie(SESSION_COOKIE)
        return secure(response)

    def signup_form(self, request: Request) -> Response:
        with session_scope(self.database) as session:
            return render(request, "signup.html", visit(request, session))

    def signup(
        self,
        request: Request,
        name: str = Form(""),
        display_name: str = Form(""),
        password: str = Form(""),
        csrf_token: str = Form(""),
    ) -> Response:
        with session_scope(self.database) as session:
            seen = checked_form(request, session, csrf_token)
            try:
                signups, _ = hit(session, "signup", window_s=3600, add=0)  # every replica's
                if signups >= SIGNUPS_PER_HOUR_MAX:
                    raise RateLimited("too many new accounts this hour; try again later")
                account = create_account(
                    session, name.strip(), display_name=display_name.strip()[:200]
                )
                set_password(session, account, password)
                hit(session, "signup", window_s=3600)
            except VizError as error:
                session.rollback()
                return render(
                    request,
                    "signup.html",
                    seen,
                    status=error.http_status,
                    error=error.message,
                    name=name,
                    display_name=display_name,
                )
        name = name.strip()
        return self.login(
            request,
            name=name,
            password=password,
            csrf_token=csrf_token,
            next=f"/dashboard/{name}/consumer",
        )


def account_router(database: Database) -> APIRouter:
    """The login, logout and signup pages."""
    pages = AccountPages(database)
    router = APIRouter(include_in_schema=False)
    router.add_api_route("/login", pages.login_form, methods=["GET"], response_class=HTMLResponse)
    router.add_api_route("/login", pages.login, methods=["POST"])
    router.add_api_route("/logout", pages.logout, methods=["POST"])
    router.add_api_route("/signup", pages.signup_form, methods=["GET"], response_class=HTMLResponse)
    router.add_api_route("/signup", pages.signup, methods=["POST"])
    return router
