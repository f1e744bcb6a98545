"""What every page shares: the templates, who is visiting, rendering with the security headers,
checking a form's CSRF token, and a dashboard's owner."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import Response
from fastapi.templating import Jinja2Templates
from sqlalchemy import select
from sqlalchemy.orm import Session

from viz.errors import Forbidden, NotFound, Unauthenticated
from viz.store.schema import Account
from viz.web.auth import check_csrf, session_account

__all__ = [
    "CSRF_COOKIE",
    "SECURITY_HEADERS",
    "SESSION_COOKIE",
    "STATIC_DIR",
    "Visit",
    "checked_form",
    "local_target",
    "own",
    "render",
    "secure",
    "templates",
    "visit",
]

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"  # the stylesheet, served at /static
SESSION_COOKIE = "viz_session"
CSRF_COOKIE = "viz_csrf"
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}

templates = Jinja2Templates(directory=HERE / "templates")
templates.env.filters["money"] = lambda micro: f"{int(micro):,} µ"
templates.env.filters["short_hash"] = lambda value: f"{value[:12]}…" if value else ""


@dataclass
class Visit:
    """Who is looking: the logged-in account (or None) and the CSRF token their forms carry."""

    account: Account | None
    csrf: str
    new_csrf_cookie: str | None  # set on the response: a logged-out visitor's first form


def visit(request: Request, session: Session) -> Visit:
    """The visitor: their session's account and CSRF token, or a logged-out visitor's token
    (from their `viz_csrf` cookie, or a fresh one the response sets)."""
    found = session_account(session, request.cookies.get(SESSION_COOKIE))
    if found is not None:
        account, row = found
        return Visit(account, row.csrf_token, None)
    cookie = request.cookies.get(CSRF_COOKIE, "")
    if len(cookie) == 64:
        return Visit(None, cookie, None)
    fresh = secrets.token_hex(32)
    return Visit(None, fresh, fresh)


def render(
    request: Request, template: str, visit: Visit, status: int = 200, **context: Any
) -> Response:
    """`template` filled with `context` for `visit`, with its CSRF cookie and security headers."""
    response = templates.TemplateResponse(
        request, template, {"visit": visit, **context}, status_code=status
    )
    if visit.new_csrf_cookie:
        response.set_cookie(
            CSRF_COOKIE,
            visit.new_csrf_cookie,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
    return secure(response)


def checked_form(request: Request, session: Session, token: str) -> Visit:
    """The visitor, after checking the form's CSRF token (a forged post gets 403)."""
    seen = visit(request, session)
    expected = seen.csrf if seen.new_csrf_cookie is None else None
    check_csrf(expected, token)
    return seen


def own(session: Session, seen: Visit, name: str) -> Account:
    """The logged-in account, which must be `name`: a dashboard is its owner's alone.

    Raises:
        Unauthenticated: nobody is logged in.
        Forbidden: someone else is.
        NotFound: no account is called `name`.
    """
    if seen.account is None:
        raise Unauthenticated("log in to see your dashboard")
    if seen.account.name != name:  # admins too: they see takedowns, not wallets
        raise Forbidden(f"this dashboard belongs to {name!r}; yours is at /dashboard")
    account = session.scalar(select(Account).where(Account.name == name))
    if account is None:
        raise NotFound(f"no account named {name!r}")
    return account


def local_target(target: str) -> str:
    """`target` if it is a path on this site, else the dashboard (no open redirects)."""
    if target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/dashboard"


def secure(response: Response) -> Response:
    """`response` with the pages' security headers (those it does not set itself)."""
    for header, value in SECURITY_HEADERS.items():
        response.headers.setdefault(header, value)
    return response
