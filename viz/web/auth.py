"""Logins for the marketplace's pages: Argon2id passwords, server-side sessions, CSRF tokens.

A login sets one cookie, `viz_session`: 256 random bits, HttpOnly, SameSite=Lax, Secure over
HTTPS. The database keeps only its SHA-256 (a stolen database opens no session), the account it
belongs to, when it expires and the session's CSRF token. Every form carries a CSRF token: the
session's when logged in, otherwise the one in the `viz_csrf` cookie (double submit), so a page
on another site can post nothing in the visitor's name, not even a login.

    set_password(session, account, "correct horse battery staple")
    token = log_in(session, "ada", "correct horse battery staple", throttle=Throttle())
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from viz.errors import Forbidden, InvalidInput, RateLimited, Unauthenticated
from viz.store.schema import Account, WebSession, utc_now
from viz.store.windows import hit

__all__ = [
    "PASSWORD_CHARS_MAX",
    "PASSWORD_CHARS_MIN",
    "Throttle",
    "check_csrf",
    "log_in",
    "log_out",
    "session_account",
    "set_password",
]

PASSWORD_CHARS_MIN = 10
PASSWORD_CHARS_MAX = 200
SESSION_TOKEN_BYTES = 32
SESSIONS_PER_ACCOUNT_MAX = 20
SESSION_LIFETIME = timedelta(hours=12)
HASHER = PasswordHasher()  # Argon2id, RFC 9106 low-memory profile (64 MiB, 3 passes)


@cache
def _dummy_hash() -> str:
    """Verified when the account is unknown or has no password, so timing does not tell which.
    Made on first use, not at import: every `viz` command imports this module."""
    return HASHER.hash("not a password anyone has")


def set_password(session: Session, account: Account, password: str) -> None:
    """Store the Argon2id hash of `password` as `account`'s login; ends its open sessions.

    Raises:
        InvalidInput: the password is shorter than 10 or longer than 200 characters.
    """
    if not PASSWORD_CHARS_MIN <= len(password) <= PASSWORD_CHARS_MAX:
        raise InvalidInput(
            f"the password has {len(password)} characters; use {PASSWORD_CHARS_MIN} to "
            f"{PASSWORD_CHARS_MAX} (a few unrelated words make a good one)"
        )
    account.password_hash = HASHER.hash(password)
    session.execute(delete(WebSession).where(WebSession.account_id == account.id))


@dataclass(frozen=True)
class Throttle:
    """At most `failures_max` failed logins per account name per `window_s` window, counted in
    the database (`viz.store.windows`) so that every replica of the pages counts together."""

    failures_max: int = 5
    window_s: float = 300.0

    def check(self, session: Session, name: str) -> None:
        """Raises RateLimited when this window and the one before hold `failures_max` failures
        (so a burst that spans two windows is still counted whole)."""
        scope, now_us = f"login:{name[:64]}", time.time_ns() // 1000
        failures, reset_s = hit(session, scope, window_s=self.window_s, add=0, now_us=now_us)
        before, _ = hit(
            session, scope, window_s=self.window_s, add=0, now_us=now_us - int(self.window_s * 1e6)
        )
        if failures + before >= self.failures_max:
            # once this window ends, its failures are the window before
            wait = reset_s + (self.window_s if failures >= self.failures_max else 0)
            raise RateLimited(
                f"too many failed logins for {name!r}; try again in {int(wait) + 1} seconds"
            )

    def failed(self, session: Session, name: str) -> None:
        hit(session, f"login:{name[:64]}", window_s=self.window_s)


def log_in(session: Session, name: str, password: str, *, throttle: Throttle) -> str:
    """Check `name`'s password and open a session; returns the cookie's token (shown once).

    Raises:
        Unauthenticated: unknown account, no password set or a wrong password (one message
            for all three, so it does not tell which accounts exist).
        RateLimited: too many recent failures for this name.
    """
    throttle.check(session, name)
    account = session.scalar(select(Account).where(Account.name == name))
    stored = account.password_hash if account is not None else None
    try:
        HASHER.verify(stored or _dummy_hash(), password[:PASSWORD_CHARS_MAX])
        correct = stored is not None
    except (VerificationError, InvalidHashError):
        correct = False
    if account is None or not correct:
        throttle.failed(session, name)
        raise Unauthenticated(
            "wrong account name or password (an account without a password sets one with: "
            "viz account password NAME)"
        )
    if stored is not None and HASHER.check_needs_rehash(stored):
        account.password_hash = HASHER.hash(password)
    _drop_oldest_sessions(session, account)
    token = secrets.token_hex(SESSION_TOKEN_BYTES)
    now = utc_now()
    session.add(
        WebSession(
            token_sha256=_digest(token),
            account_id=account.id,
            csrf_token=secrets.token_hex(32),
            created_at=now,
            expires_at=now + SESSION_LIFETIME,
        )
    )
    session.flush()
    return token


def session_account(session: Session, token: str | None) -> tuple[Account, WebSession] | None:
    """The account and session a cookie token opens, or None (missing, unknown, expired)."""
    if not token or len(token) != 2 * SESSION_TOKEN_BYTES:
        return None
    row = session.get(WebSession, _digest(token))
    if row is None:
        return None
    expires = row.expires_at
    if expires.tzinfo is None:  # SQLite hands back naive UTC
        expires = expires.replace(tzinfo=UTC)
    if expires <= datetime.now(UTC):
        session.delete(row)
        return None
    return row.account, row


def log_out(session: Session, token: str | None) -> None:
    if token:
        session.execute(delete(WebSession).where(WebSession.token_sha256 == _digest(token)))


def check_csrf(expected: str | None, given: str | None) -> None:
    """Refuse a form whose CSRF token is missing or differs from the session's (or cookie's).

    Raises:
        Forbidden: the tokens differ or one is missing.
    """
    if not expected or not given or not hmac.compare_digest(expected, given):
        raise Forbidden(
            "this form was not sent from Viz's own page (its CSRF token is missing or stale); "
            "reload the page and submit it again"
        )


def _drop_oldest_sessions(session: Session, account: Account) -> None:
    rows = session.scalars(
        select(WebSession)
        .where(WebSession.account_id == account.id)
        .order_by(WebSession.created_at.desc())
    ).all()
    for row in rows[SESSIONS_PER_ACCOUNT_MAX - 1 :]:
        session.delete(row)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()
