"""Royalty shares: a merged adapter version pays its contributors part of every royalty.

The story: ada owns qa@1.0.0 (built, say, by merging carol's and dave's adapters), and gives
carol 30% and dave 20% of what it earns; ada keeps 50%. Each test runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session

from viz.accounts import create_account, get_account
from viz.errors import Conflict, InvalidInput
from viz.ledger import (
    AdapterUse,
    Usage,
    balances,
    quote,
    release_escrow,
    set_version_shares,
    settle,
    settle_batch,
    statement,
    topup,
    verify_ledger,
    version_shares,
)
from viz.store import session_scope
from viz.store.schema import AdapterVersion, LedgerAccount, LogEntry
from worlds.ledger import BASE, build_market

FEE = 1000  # 10%
# qa@1.0.0 costs 100 in / 300 out per 1,000 tokens (worlds/ledger.py): 1,000 tokens in and
# 2,000 out are worth 100 + 600 = 700 micro-units; after the 10% fee 630 go to royalties.
CHARGE = 700
CAROL_BPS, DAVE_BPS = 3000, 2000
CAROL_PART = 630 * 30 // 100  # 189
DAVE_PART = 630 * 20 // 100  # 126
ADA_PART = 630 - CAROL_PART - DAVE_PART  # 315
REASONS = {
    "carol": "child text-classification@1.0.0 contributed 0.31 nats",
    "dave": "child summarise@1.0.0 contributed 0.20 nats",
}


@pytest.fixture
def market(engine: Engine) -> Engine:
    """The worlds/ledger.py market plus dave, with bob topped up by 1,000,000 micro-units."""
    build_market(engine)
    with session_scope(engine) as session:
        create_account(session, "dave")
        topup(session, "bob", 1_000_000, transfer_id="bob-first")
    return engine


@pytest.fixture
def shared(market: Engine) -> Engine:
    """The market with qa@1.0.0 paying carol 30% and dave 20% of its royalties."""
    with session_scope(market) as session:
        give_shares(session, [("carol", CAROL_BPS), ("dave", DAVE_BPS)])
    return market


def give_shares(session: Session, shares: list[tuple[str, Any]]) -> None:
    """qa@1.0.0 (ada's) pays each (name, share_bps) that share, for the reason in REASONS."""
    accounts = [(get_account(session, name), bps) for name, bps in shares]
    set_version_shares(
        session,
        qa_version(session),
        [(account, bps, REASONS.get(account.name, "a reason")) for account, bps in accounts],
    )


def qa_version(session: Session) -> AdapterVersion:
    return session.scalars(select(AdapterVersion).where(AdapterVersion.price_in_micro == 100)).one()


def usage(request_id: str, **fields: object) -> Usage:
    values: dict[str, object] = {
        "request_id": request_id,
        "consumer": "bob",
        "base": BASE,
        "tokens_in": 1000,
        "tokens_out": 2000,
        "composition": (AdapterUse("qa", "1.0.0"),),
    }
    values.update(fields)
    return Usage(**values)  # type: ignore[arg-type]


def posted(engine: Engine, code: str) -> int:
    with session_scope(engine) as session:
        return next(b.posted for b in balances(session, code))


def check(engine: Engine) -> None:
    with session_scope(engine) as session:
        verify_ledger(session)


@contextmanager
def refused(engine: Engine, error: type[Exception], match: str) -> Iterator[Session]:
    """A session whose block must raise `error` (matching `match`); nothing it did is kept."""
    with pytest.raises(error, match=match), session_scope(engine) as session:
        yield session


def logged_shares(engine: Engine) -> list[dict[str, object]]:
    with session_scope(engine) as session:
        rows = session.scalars(select(LogEntry.data).where(LogEntry.kind == "royalty_shares"))
        return [json.loads(data) for data in rows]


# --- settlement -----------------------------------------------------------------------------


def test_contributors_are_paid_their_share_of_every_request(shared: Engine) -> None:
    with session_scope(shared) as session:
        settled = settle(session, usage("r-1"), fee_bps=FEE)
    assert settled.charge == CHARGE
    assert [(ln.account, ln.kind, ln.amount, ln.adapter) for ln in settled.lines] == [
        ("creator:ada", "royalty", ADA_PART, "qa@1.0.0"),
        ("creator:carol", "royalty", CAROL_PART, "qa@1.0.0"),
        ("creator:dave", "royalty", DAVE_PART, "qa@1.0.0"),
        ("platform", "fee", 70, None),
    ]
    assert sum(line.amount for line in settled.lines) == settled.charge
    assert posted(shared, "consumer:bob") == 1_000_000 - CHARGE
    assert posted(shared, "creator:carol") == CAROL_PART
    assert posted(shared, "creator:dave") == DAVE_PART
    assert posted(shared, "clearing") == 0
    check(shared)


def test_shares_do_not_change_what_the_consumer_pays(market: Engine) -> None:
    with session_scope(market) as session:
        before = quote(session, usage("r-1"), fee_bps=FEE)
        give_shares(session, [("carol", 3333), ("dave", 3333)])
        after = quote(session, usage("r-1"), fee_bps=FEE)
    assert before == after == CHARGE


def test_a_contributors_statement_names_the_version_that_paid_them(shared: Engine) -> None:
    composition = (AdapterUse("qa", "1.0.0"), AdapterUse("mt", "1.0.0"))
    with session_scope(shared) as session:
        settled = settle(session, usage("r-1", composition=composition), fee_bps=FEE)
        carol = statement(session, "carol")
    own = next(ln.amount for ln in settled.lines if ln.adapter == "mt@1.0.0")
    share = next(
        ln.amount
        for ln in settled.lines
        if ln.adapter == "qa@1.0.0" and ln.account == "creator:carol"
    )
    assert sorted(carol.per_adapter) == sorted([("mt@1.0.0", 1, own), ("qa@1.0.0", 1, share)])
    assert carol.earned == own + share


def test_many_tiny_requests_never_create_or_lose_a_micro_unit(market: Engine) -> None:
    # Odd shares (33.33% each, the owner 33.34%) on requests worth fractions of a micro-unit:
    # every request still pays out exactly its charge, each line within one micro-unit of its
    # exact share, and the whole book nets to zero.
    with session_scope(market) as session:
        give_shares(session, [("carol", 3333), ("dave", 3333)])
    sizes = random.Random(7)
    batch = [
        usage(f"tiny-{i}", tokens_in=sizes.randint(0, 9), tokens_out=sizes.randint(1, 9))
        for i in range(300)
    ]
    with session_scope(market) as session:
        outcome = settle_batch(session, batch, fee_bps=FEE)
    assert outcome.refused == {}
    for settled in outcome.settled:
        assert sum(line.amount for line in settled.lines) == settled.charge
        for line in settled.lines:
            bps = {"creator:ada": 3334, "creator:carol": 3333, "creator:dave": 3333}.get(
                line.account
            )
            if bps is not None:
                exact = Fraction(settled.charge * bps * (10_000 - FEE), 10_000**2)
                assert abs(line.amount - exact) < 1
    charged = sum(settled.charge for settled in outcome.settled)
    earned = sum(posted(market, code) for code in ("creator:ada", "creator:carol", "creator:dave"))
    assert charged > 0
    assert posted(market, "consumer:bob") == 1_000_000 - charged
    assert earned + posted(market, "platform") == charged
    with session_scope(market) as session:
        book_total = session.scalar(
            select(func.sum(LedgerAccount.credits_posted - LedgerAccount.debits_posted))
        )
    assert book_total == 0
    check(market)


def test_a_retried_request_returns_the_same_split(shared: Engine) -> None:
    with session_scope(shared) as session:
        first = settle(session, usage("r-1"), fee_bps=FEE)
    with session_scope(shared) as session:
        again = settle(session, usage("r-1"), fee_bps=FEE)
    assert again.replayed
    assert (again.charge, again.lines) == (first.charge, first.lines)
    assert posted(shared, "creator:carol") == CAROL_PART
    assert posted(shared, "consumer:bob") == 1_000_000 - CHARGE
    check(shared)


def test_an_owner_who_gives_away_everything_gets_no_line(market: Engine) -> None:
    with session_scope(market) as session:
        give_shares(session, [("carol", 6000), ("dave", 4000)])
        settled = settle(session, usage("r-1"), fee_bps=FEE)
    assert [line.account for line in settled.lines] == [
        "creator:carol",
        "creator:dave",
        "platform",
    ]
    assert [line.amount for line in settled.lines] == [378, 252, 70]
    check(market)


# --- takedowns ------------------------------------------------------------------------------


def test_a_taken_down_version_sends_everything_to_escrow_and_splits_it_on_restore(
    shared: Engine,
) -> None:
    with session_scope(shared) as session:
        qa_version(session).status = "taken_down"
    with session_scope(shared) as session:
        settled = settle(session, usage("r-1"), fee_bps=FEE)
    assert [(ln.account, ln.kind, ln.amount) for ln in settled.lines] == [
        ("escrow", "escrow", 630),
        ("platform", "fee", 70),
    ]
    assert posted(shared, "escrow") == 630
    with session_scope(shared) as session:
        qa_version(session).status = "approved"
        released = release_escrow(session, qa_version(session), to="creator")
    assert (released.shares, released.amount) == (1, 630)
    assert posted(shared, "escrow") == 0
    assert posted(shared, "creator:ada") == ADA_PART
    assert posted(shared, "creator:carol") == CAROL_PART
    assert posted(shared, "creator:dave") == DAVE_PART
    with session_scope(shared) as session:
        again = release_escrow(session, qa_version(session), to="creator")
        assert statement(session, "dave").per_adapter == [("qa@1.0.0", 1, DAVE_PART)]
    assert (again.amount, again.already_released) == (0, 1)
    with refused(shared, Conflict, "already released") as session:
        release_escrow(session, qa_version(session), to="consumers")
    check(shared)


# --- setting shares -------------------------------------------------------------------------


def test_setting_shares_is_logged_publicly(shared: Engine) -> None:
    (entry,) = logged_shares(shared)
    assert (entry["adapter"], entry["version"], entry["creator"]) == ("qa", "1.0.0", "ada")
    assert entry["creator_bps"] == 5000
    assert entry["shares"] == [
        {"account": "carol", "share_bps": CAROL_BPS, "reason": REASONS["carol"]},
        {"account": "dave", "share_bps": DAVE_BPS, "reason": REASONS["dave"]},
    ]
    with session_scope(shared) as session:
        assert version_shares(session, qa_version(session).id) == [
            ("carol", CAROL_BPS),
            ("dave", DAVE_BPS),
        ]


@pytest.mark.parametrize(
    ("shares", "message"),
    [
        ([("carol", 6000), ("dave", 4500)], "sum to 10500 basis points"),
        ([("carol", 1000), ("carol", 2000)], "carol is listed twice"),
        ([("ada", 1000)], "the owner keeps the remainder"),
        ([("carol", 0)], "carol's share 0 must be 1..10000"),
        ([("carol", 10_001)], "must be 1..10000"),
        ([("carol", "30%")], "must be 1..10000"),
        ([], "at least one contributor"),
    ],
)
def test_bad_shares_are_refused_and_nothing_is_stored(
    market: Engine, shares: list[tuple[str, Any]], message: str
) -> None:
    with refused(market, InvalidInput, message) as session:
        give_shares(session, shares)
    with session_scope(market) as session:
        assert version_shares(session, qa_version(session).id) == []
    assert logged_shares(market) == []


def test_every_problem_is_reported_at_once(market: Engine) -> None:
    with refused(market, InvalidInput, "ada owns the version.*sum to 12000") as session:
        give_shares(session, [("ada", 2000), ("carol", 10_000)])


def test_shares_are_set_once(shared: Engine) -> None:
    with refused(shared, Conflict, "already has royalty shares \\(carol 3000 bps") as session:
        give_shares(session, [("carol", 1000)])
    with session_scope(shared) as session:
        assert version_shares(session, qa_version(session).id) == [
            ("carol", CAROL_BPS),
            ("dave", DAVE_BPS),
        ]
    assert len(logged_shares(shared)) == 1


def test_shares_come_before_the_first_royalty(market: Engine) -> None:
    with session_scope(market) as session:
        settle(session, usage("r-1"), fee_bps=FEE)
    with refused(market, Conflict, "already earned royalties") as session:
        give_shares(session, [("carol", CAROL_BPS)])
    with session_scope(market) as session:
        assert version_shares(session, qa_version(session).id) == []


def test_a_version_still_being_screened_can_carry_shares(market: Engine) -> None:
    with session_scope(market) as session:
        session.execute(
            update(AdapterVersion)
            .where(AdapterVersion.price_in_micro == 100)
            .values(status="pending")
        )
        give_shares(session, [("carol", CAROL_BPS)])
        assert version_shares(session, qa_version(session).id) == [("carol", CAROL_BPS)]
