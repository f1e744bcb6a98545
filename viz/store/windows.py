"""Fixed-window counters in the database: rate limits that every replica shares.

    count, reset_s = hit(session, "api:7", window_s=60)       # one more request this minute
    if count > limit: raise RateLimited(f"... retry in {reset_s:.0f} s")
    seen, _ = hit(session, "login:ada", window_s=300, add=0)  # look without counting

One row per (scope, window start), incremented with an upsert, so concurrent processes on one
database count together; `purge_windows` drops the finished windows.
"""

from __future__ import annotations

import time

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from viz.store.gateway import RateWindow

__all__ = ["hit", "purge_windows"]

WINDOWS_KEPT_S = 24 * 3600  # the longest window any limit uses


def hit(
    session: Session, scope: str, *, window_s: float, add: int = 1, now_us: int | None = None
) -> tuple[int, float]:
    """Count `add` events for `scope` in its current window of `window_s` seconds; returns the
    window's count (these included) and the seconds until the window resets."""
    now_us = now_us if now_us is not None else time.time_ns() // 1000
    width = int(window_s * 1e6)
    start = now_us - now_us % width
    reset_s = (start + width - now_us) / 1e6
    if add == 0:
        found = session.scalar(
            select(RateWindow.count).where(RateWindow.scope == scope, RateWindow.window_us == start)
        )
        return int(found or 0), reset_s
    dialect = session.get_bind().dialect.name
    insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
    statement = (
        insert(RateWindow)
        .values(scope=scope, window_us=start, count=add)
        .on_conflict_do_update(
            index_elements=["scope", "window_us"], set_={"count": RateWindow.count + add}
        )
        .returning(RateWindow.count)
    )
    return int(session.execute(statement).scalar_one()), reset_s


def purge_windows(session: Session, *, now_us: int | None = None) -> int:
    """Delete windows that started over a day ago (no limit looks that far back)."""
    now_us = now_us if now_us is not None else time.time_ns() // 1000
    cutoff = now_us - WINDOWS_KEPT_S * 1_000_000
    result = session.execute(delete(RateWindow).where(RateWindow.window_us < cutoff))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
