"""Web logins without a browser: passwords, sessions, CSRF, redirects and headers."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from viz.accounts import create_account
from viz.config import Settings
from viz.errors import Forbidden, InvalidInput, RateLimited, Unauthenticated
from viz.store.database import open_database, session_scope
from viz.store.schema import WebSession, utc_now
from viz.web._page import local_target as _local
from viz.web.auth import Throttle, check_csrf, log_in, session_account, set_password


def test_a_password_logs_in_and_is_stored_only_as_an_argon2_hash(sqlite_engine) -> None:
    with session_scope(sqlite_engine) as session:
        ada = create_account(session, "ada")
        set_password(session, ada, "a long enough password")
        assert ada.password_hash and ada.password_hash.startswith("$argon2id$")
        assert "a long enough password" not in ada.password_hash

        token = log_in(session, "ada", "a long enough password", throttle=Throttle())
        found = session_account(session, token)
        assert found is not None and found[0].name == "ada"
        assert session.get(WebSession, token) is None  # the row is keyed by the digest


def test_wrong_unknown_and_passwordless_logins_get_one_message(sqlite_engine) -> None:
    throttle = Throttle(failures_max=3)
    with session_scope(sqlite_engine) as session:
        set_password(session, create_account(session, "ada"), "a long enough password")
        create_account(session, "bob")  # no password: no web login
        messages = set()
        for name, password in (("ada", "wrong one!"), ("nobody", "x"), ("bob", "")):
            with pytest.raises(Unauthenticated) as error:
                log_in(session, name, password, throttle=throttle)
            messages.add(error.value.message)
        assert len(messages) == 1
        for _ in range(2):
            with pytest.raises(Unauthenticated):
                log_in(session, "ada", "wrong again", throttle=throttle)
        with pytest.raises(RateLimited, match="too many failed logins"):  # HTTP 429
            log_in(session, "ada", "a long enough password", throttle=throttle)


def test_expired_sessions_and_sessions_before_a_password_change_open_nothing(
    sqlite_engine,
) -> None:
    with session_scope(sqlite_engine) as session:
        ada = create_account(session, "ada")
        set_password(session, ada, "a long enough password")
        old = log_in(session, "ada", "a long enough password", throttle=Throttle())
        expired = log_in(session, "ada", "a long enough password", throttle=Throttle())
        row = session_account(session, expired)
        assert row is not None
        row[1].expires_at = utc_now() - timedelta(seconds=1)
        assert session_account(session, expired) is None
        assert session_account(session, "f" * 64) is None
        assert session_account(session, "short") is None

        set_password(session, ada, "another long password")
        assert session_account(session, old) is None
        assert session.scalar(select(func.count()).select_from(WebSession)) == 0
        with pytest.raises(InvalidInput, match="10 to 200"):
            set_password(session, ada, "short")


def test_csrf_tokens_must_match_and_redirects_stay_on_the_site() -> None:
    check_csrf("a" * 64, "a" * 64)
    for expected, given in (("a" * 64, ""), ("a" * 64, "b" * 64), (None, "a" * 64)):
        with pytest.raises(Forbidden, match="CSRF"):
            check_csrf(expected, given)
    assert _local("/dashboard/ada/consumer") == "/dashboard/ada/consumer"
    for outside in ("https://evil.example/", "//evil.example/", "/\\evil.example", "javascript:x"):
        assert _local(outside) == "/dashboard"


def test_pages_answer_in_html_with_security_headers_and_the_api_stays_json(tmp_path) -> None:
    from viz.app import create_app

    settings = Settings(home=tmp_path)
    database = open_database(settings.database_url_resolved)
    with session_scope(database) as session:
        set_password(session, create_account(session, "ada"), "a long enough password")
    client = TestClient(create_app(settings, database))

    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert client.get("/nowhere").headers["content-type"].startswith("text/html")
    assert client.get("/v1/nowhere").json()["error"]["message"]
    assert client.get("/?price_max=cheap").status_code == 400

    # A login form posted without the token from the login page is refused.
    refused = client.post("/login", data={"name": "ada", "password": "a long enough password"})
    assert refused.status_code == 403
    form = client.get("/login")
    token = form.cookies.get("viz_csrf") or client.cookies.get("viz_csrf")
    accepted = client.post(
        "/login",
        data={"name": "ada", "password": "a long enough password", "csrf_token": token},
        follow_redirects=False,
    )
    assert accepted.status_code == 303
    cookie = accepted.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie
    assert client.get("/dashboard/ada/consumer").status_code == 200
    database.dispose()


def test_an_upload_over_the_limit_is_refused_before_it_is_read(tmp_path, monkeypatch) -> None:
    from viz.app import create_app
    from viz.web.routes import publish as pages

    monkeypatch.setattr(pages, "UPLOAD_BYTES_MAX", 1000)
    settings = Settings(home=tmp_path)
    database = open_database(settings.database_url_resolved)
    client = TestClient(create_app(settings, database))

    big = client.post("/publish", files={"weights": ("w", b"\0" * 2000)})
    assert big.status_code == 413 and "the most accepted is 1,000" in big.text
    small = client.post("/publish", files={"weights": ("w", b"\0" * 10)})
    assert small.status_code == 403  # read, then refused: no CSRF token, not logged in
    database.dispose()
