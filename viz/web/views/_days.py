"""The window the pages chart: the last CHART_DAYS days (UTC), one point a day."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

__all__ = ["CHART_DAYS", "USAGE_ROWS_MAX", "fill", "since_us"]

CHART_DAYS = 30
USAGE_ROWS_MAX = 20_000  # a chart reads at most this many recent rows


def since_us() -> int:
    """The start of the window: midnight (UTC) CHART_DAYS - 1 days ago, in microseconds."""
    since = datetime.now(UTC) - timedelta(days=CHART_DAYS - 1)
    return int(since.replace(hour=0, minute=0, second=0, microsecond=0).timestamp() * 1e6)


def fill(per_day: dict[date, int]) -> list[tuple[date, float]]:
    """The last CHART_DAYS days in order, zero where nothing happened."""
    today = datetime.now(UTC).date()
    days = [today - timedelta(days=n) for n in range(CHART_DAYS - 1, -1, -1)]
    return [(day, float(per_day.get(day, 0))) for day in days]
