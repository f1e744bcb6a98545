"""The marketplace on the web: catalogue, adapter and document pages, dashboards, the log, a
playground, publishing and logins, served by `viz serve` beside the API (FastAPI + Jinja2, no
JavaScript build).

    pages.py     add_pages (mounts every router and the stylesheet), error_page, is_page
    routes/      one router per page group: catalogue, log, account, dashboards, admin,
                 publish, playground
    views/       what each page group shows: plain queries returning plain data
    _page.py     what every page shares: templates, the visitor, rendering, CSRF, owners
    auth.py      Argon2id passwords, server-side sessions, CSRF tokens, the login throttle
    charts.py    inline-SVG charts

`add_pages`, `error_page` and `is_page` load on first use, so `viz.web.auth` (used by
`viz account password`) loads without the pages' FastAPI, market and model imports.
"""

from __future__ import annotations

from typing import Any

from viz.web.auth import Throttle, check_csrf, log_in, log_out, session_account, set_password

__all__ = [
    "Throttle",
    "add_pages",
    "check_csrf",
    "error_page",
    "is_page",
    "log_in",
    "log_out",
    "session_account",
    "set_password",
]

_PAGES = ("add_pages", "error_page", "is_page")


def __getattr__(name: str) -> Any:
    if name in _PAGES:
        # deferred: the pages import FastAPI, Jinja2, the market and the embedder's cache
        # (~0.5 s), which the CLI's `viz account password` never needs
        from viz.web import pages

        return getattr(pages, name)
    raise AttributeError(f"module 'viz.web' has no attribute {name!r}")
