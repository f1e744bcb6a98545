"""Tables of the gateway's shared state: what every `viz serve` replica on one database agrees on.

- `serve_leases`: one row per running `viz serve` process, renewed while it lives;
- `requests_in_flight`: a request being served, with its reservation's holder (a lease) and the
  tokens sent so far, so that another process can settle or void it when that lease lapses; a
  delivered request stays until the settler (`viz.serving.settler`) settles it after its answer;
- `idempotency_keys`: each `Idempotency-Key`'s attempts and its stored answer (replayed by any
  replica, after any restart);
- `rate_windows`: fixed-window counters (API requests per account, logins, sign-ups).

Registered on `viz.store.schema.Base` (schema.py imports this module), created by migrations
0007 and 0008.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, ForeignKey, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from viz.store.schema import Base, utc_now

__all__ = ["IdempotencyKey", "RateWindow", "RequestInFlight", "ServeLease"]


class ServeLease(Base):
    """A running `viz serve` process: alive while `expires_at_us` is ahead (it renews it)."""

    __tablename__ = "serve_leases"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    host: Mapped[str] = mapped_column(String(200))
    pid: Mapped[int] = mapped_column(Integer)
    started_at_us: Mapped[int] = mapped_column(BigInteger)
    expires_at_us: Mapped[int] = mapped_column(BigInteger, index=True)


class RequestInFlight(Base):
    """A request being served by lease `lease_id`: what to settle if that process dies.

    `usage_json` is the usage as reserved, without its completion tokens; `tokens_sent` is what
    the client was sent so far (a stream's progress, written at a bounded interval). Once the
    answer is delivered, `delivered_at_us` is set and `usage_json` and `tokens_sent` are final:
    whoever settles the row (this process's settler, or recovery) settles it in full."""

    __tablename__ = "requests_in_flight"

    request_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    lease_id: Mapped[str] = mapped_column(String(40), index=True)
    usage_json: Mapped[str] = mapped_column(Text)
    tokens_sent: Mapped[int] = mapped_column(Integer, default=0)
    updated_at_us: Mapped[int] = mapped_column(BigInteger)
    delivered_at_us: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class IdempotencyKey(Base):
    """An `Idempotency-Key` (only its SHA-256): whose it is, the body it came with, its current
    attempt and, once answered, the answer a retry gets back.

    `state`: running (attempt `request_id` is being served by `lease_id`), answered (`answer`
    holds the completion), failed (nothing answered: the next retry runs a new attempt) or
    evicted (answered, but the answer was dropped by the count or byte bound)."""

    __tablename__ = "idempotency_keys"

    key_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    body_json: Mapped[str] = mapped_column(Text)  # {field: sha256 of its value}
    state: Mapped[str] = mapped_column(String(16))
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    request_id: Mapped[str] = mapped_column(String(100))
    lease_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    answer: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    answer_bytes: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)
    finished_at_us: Mapped[int | None] = mapped_column(BigInteger, index=True, nullable=True)


class RateWindow(Base):
    """How many events `scope` (`api:7`, `login:ada`, `signup`) had in the window starting at
    `window_us`: a fixed-window rate limit every replica shares."""

    __tablename__ = "rate_windows"

    scope: Mapped[str] = mapped_column(String(100), primary_key=True)
    window_us: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)
