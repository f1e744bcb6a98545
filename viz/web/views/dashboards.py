"""The dashboards: a creator's earnings and payouts, a consumer's balance, keys and spending.

A dashboard is its owner's alone (the routes check that); the figures come from the ledger's
statements (`viz.ledger.statements`), charted over the last CHART_DAYS days.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from viz.ledger.accounts import Balance
from viz.ledger.statements import Statement, earnings, spending
from viz.store.schema import Account, Adapter, ApiKey
from viz.web.views._days import USAGE_ROWS_MAX, fill, since_us

__all__ = ["ConsumerDashboard", "CreatorDashboard", "consumer_dashboard", "creator_dashboard"]


@dataclass(frozen=True)
class CreatorDashboard:
    statement: Statement | None
    adapters: list[tuple[str, str, str]]  # name, newest version, status
    earnings: dict[str, list[tuple[date, float]]]  # series name -> micro-units per day
    payouts: list[tuple[datetime, int, str, str]]  # when, amount, phase, memo


def creator_dashboard(session: Session, account: Account) -> CreatorDashboard:
    """What `account` earned, per adapter and per document, over time, and was paid out."""
    adapters = [
        (adapter.name, adapter.versions[-1].version, adapter.versions[-1].status)
        for adapter in session.scalars(
            select(Adapter).where(Adapter.owner_id == account.id).order_by(Adapter.name)
        )
        if adapter.versions
    ]
    earned = earnings(session, account.name, since_us=since_us(), rows_max=USAGE_ROWS_MAX)
    if earned is None:  # no creator ledger account yet: nothing earned
        return CreatorDashboard(None, adapters, {}, [])
    return CreatorDashboard(
        statement=earned.statement,
        adapters=adapters,
        earnings={name: fill(per_day) for name, per_day in sorted(earned.per_day.items())},
        payouts=earned.payouts,
    )


@dataclass(frozen=True)
class ConsumerDashboard:
    balance: Balance | None
    keys: list[ApiKey]
    per_adapter: list[tuple[str, int, int, int]]  # adapter, requests, tokens, micro-units paid
    spending: list[tuple[date, float]]  # micro-units per day
    recent: list[dict[str, Any]]


def consumer_dashboard(session: Session, account: Account) -> ConsumerDashboard:
    """`account`'s balance, API keys, and usage per adapter and over time."""
    spent = spending(session, account, since_us=since_us(), rows_max=USAGE_ROWS_MAX)
    return ConsumerDashboard(
        balance=spent.balance,
        keys=list(
            session.scalars(
                select(ApiKey)
                .where(ApiKey.account_id == account.id)
                .order_by(ApiKey.created_at.desc())
            )
        ),
        per_adapter=spent.per_adapter,
        spending=fill(spent.per_day),
        recent=spent.recent,
    )
