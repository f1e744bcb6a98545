"""The ledger: double entry, idempotency, two-phase transfers, royalties, payouts, verify.

Each test runs on SQLite and PostgreSQL (the `engine` fixture) unless it says otherwise.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction

import pytest
from sqlalchemy import Engine, select, text, update
from sqlalchemy.orm import Session

from viz.errors import (
    Conflict,
    InvalidInput,
    LedgerCorrupt,
    NotFound,
    PaymentRequired,
    VizError,
)
from viz.ledger import (
    AdapterUse,
    Book,
    PayoutOrder,
    Report,
    Transfer,
    Usage,
    anchor_ledger,
    balances,
    expire_overdue,
    history,
    payout,
    quote,
    release_escrow,
    reserve,
    set_credit_limit,
    settle,
    settle_batch,
    statement,
    topup,
    transfer,
    transfer_group,
    verify_ledger,
    void_reservation,
)
from viz.ledger.pricing import split
from viz.ledger.transfers import now_us
from viz.store import session_scope
from viz.store.schema import AdapterVersion, LedgerAccount, LedgerTransfer, LogEntry, UsageEvent
from worlds.ledger import BASE, add_adapter, build_market

FEE = 1000  # 10%


@pytest.fixture
def market(engine: Engine) -> tuple[Engine, int]:
    """The worlds/ledger.py market with bob topped up by 1,000,000 micro-units."""
    document_id = build_market(engine)
    with session_scope(engine) as session:
        topup(session, "bob", 1_000_000, transfer_id="bob-first")
    return engine, document_id


def available(engine: Engine, code: str) -> int:
    with session_scope(engine) as session:
        return next(b.available for b in balances(session, code))


def posted(engine: Engine, code: str) -> int:
    with session_scope(engine) as session:
        return next(b.posted for b in balances(session, code))


HOUR_US = 3_600 * 10**6


def check(engine: Engine, *, now_us: int | None = None) -> None:
    with session_scope(engine) as session:
        verify_ledger(session, now_us=now_us)


@contextmanager
def refused(engine: Engine, error: type[Exception], match: str | None) -> Iterator[Session]:
    """A session whose block must raise `error` (matching `match`); nothing it did is kept."""
    with pytest.raises(error, match=match), session_scope(engine) as session:
        yield session


def usage(request_id: str, **fields: object) -> Usage:
    values: dict[str, object] = {
        "request_id": request_id,
        "consumer": "bob",
        "base": BASE,
        "tokens_in": 1000,
        "tokens_out": 2000,
        "composition": (AdapterUse("qa", "1.0.0", "0.7"), AdapterUse("mt", "1.0.0", 0.5)),
    }
    values.update(fields)
    return Usage(**values)  # type: ignore[arg-type]


# --- transfers ------------------------------------------------------------------------------


def test_a_topup_moves_money_from_external_and_a_retry_is_not_credited_twice(market) -> None:
    engine, _ = market
    with session_scope(engine) as session:
        again = topup(session, "bob", 1_000_000, transfer_id="bob-first")
    assert again.replayed
    assert posted(engine, "consumer:bob") == 1_000_000
    assert posted(engine, "external") == -1_000_000
    check(engine)


def test_a_retry_with_other_fields_is_refused(market) -> None:
    engine, _ = market
    with refused(engine, Conflict, "already used with other fields \\(amount\\)") as session:
        topup(session, "bob", 2_000_000, transfer_id="bob-first")
    assert posted(engine, "consumer:bob") == 1_000_000


@pytest.mark.parametrize(
    ("amount", "message"),
    [(0, "positive"), (-5, "positive"), (10**16, "at most"), (1.5, "integer"), (True, "integer")],
)
def test_bad_amounts_are_refused(market, amount, message) -> None:
    engine, _ = market
    with refused(engine, InvalidInput, message) as session:
        topup(session, "bob", amount)


def test_unknown_accounts_are_refused(market) -> None:
    engine, _ = market
    with refused(engine, NotFound, "no account named 'zed'") as session:
        topup(session, "zed", 5)
    with refused(engine, NotFound, "'consumer:dan', which does not exist") as session:
        transfer(session, Transfer("t-dan", "consumer:bob", "consumer:dan", 5))


def test_an_overdraft_is_refused_and_a_linked_group_leaves_nothing_behind(market) -> None:
    engine, _ = market
    with session_scope(engine) as session:
        topup(session, "dan", 10, transfer_id="dan-first")
        before = session.scalar(select(LedgerTransfer.seq).order_by(LedgerTransfer.seq.desc()))
    group = [
        Transfer("g-1", "consumer:bob", "consumer:dan", 400_000, memo="fits"),
        Transfer("g-2", "consumer:bob", "consumer:dan", 700_000, memo="does not fit"),
    ]
    with refused(
        engine, PaymentRequired, "consumer:bob has 600000 micro-units available"
    ) as session:
        transfer_group(session, group)
    with session_scope(engine) as session:
        after = session.scalar(select(LedgerTransfer.seq).order_by(LedgerTransfer.seq.desc()))
    assert after == before
    assert posted(engine, "consumer:bob") == 1_000_000
    check(engine)


def test_a_credit_limit_lets_a_consumer_go_below_zero_and_no_further(market) -> None:
    engine, _ = market
    with session_scope(engine) as session:
        topup(session, "dan", 1, transfer_id="dan-open")
        set_credit_limit(session, "bob", 500)
        transfer(session, Transfer("owe", "consumer:bob", "consumer:dan", 1_000_400))
    assert posted(engine, "consumer:bob") == -400
    with refused(engine, PaymentRequired, None) as session:
        transfer(session, Transfer("owe-more", "consumer:bob", "consumer:dan", 101))
    with refused(engine, InvalidInput, "below that") as session:
        set_credit_limit(session, "bob", 0)
    check(engine)


def test_reserved_ids_and_self_transfers_are_refused(market) -> None:
    engine, _ = market
    for bad, message in [
        (Transfer("usage/x", "consumer:bob", "external", 1), "prefix Viz reserves"),
        (Transfer("same", "consumer:bob", "consumer:bob", 1), "same account"),
        (Transfer("has space", "consumer:bob", "external", 1), "must be 1-160"),
        (Transfer("p", "consumer:bob", "external", 1, phase="pending"), "timeout"),
        (Transfer("e", amount=0, phase="expire", pending_id="x"), "Viz's to record"),
    ]:
        with refused(engine, InvalidInput, message) as session:
            transfer(session, bad)


# --- two-phase ------------------------------------------------------------------------------


def pending(transfer_id: str, amount: int, timeout_s: int = 60) -> Transfer:
    return Transfer(
        transfer_id, "consumer:bob", "external", amount, phase="pending", timeout_s=timeout_s
    )


def test_a_pending_transfer_reserves_funds_until_posted_for_less(market) -> None:
    engine, _ = market
    with session_scope(engine) as session:
        transfer(session, pending("hold", 300_000))
    assert available(engine, "consumer:bob") == 700_000
    assert posted(engine, "consumer:bob") == 1_000_000
    with refused(engine, InvalidInput, "reserved only 300000") as session:
        transfer(session, Transfer("take", amount=300_001, phase="post", pending_id="hold"))
    with session_scope(engine) as session:
        transfer(session, Transfer("take", amount=120_000, phase="post", pending_id="hold"))
    assert posted(engine, "consumer:bob") == 880_000
    assert available(engine, "consumer:bob") == 880_000
    with refused(engine, Conflict, "already posted") as session:
        transfer(session, Transfer("take-2", amount=1, phase="post", pending_id="hold"))
    check(engine)


def test_a_voided_transfer_cannot_be_posted(market) -> None:
    engine, _ = market
    with session_scope(engine) as session:
        transfer(session, pending("hold", 300_000))
        transfer(session, Transfer("drop", phase="void", pending_id="hold"))
    assert available(engine, "consumer:bob") == 1_000_000
    with refused(engine, Conflict, "already voided") as session:
        transfer(session, Transfer("take", amount=5, phase="post", pending_id="hold"))
    with refused(engine, NotFound, "no pending transfer 'nothing'") as session:
        transfer(session, Transfer("take", amount=5, phase="post", pending_id="nothing"))
    check(engine)


def test_a_pending_transfer_expires_after_its_timeout(market) -> None:
    engine, _ = market
    with session_scope(engine) as session:
        transfer(session, pending("hold", 300_000, timeout_s=5))
        start = session.scalar(
            select(LedgerTransfer.timestamp_us).order_by(LedgerTransfer.seq.desc())
        )
    with session_scope(engine) as session:
        assert expire_overdue(session, now_us=start + 4_000_000) == []
        (expired,) = expire_overdue(session, now_us=start + 5_000_001)
    assert expired.phase == "expire" and expired.amount == 300_000
    assert available(engine, "consumer:bob") == 1_000_000
    with refused(engine, Conflict, "already expired") as session:
        transfer(session, Transfer("late", amount=5, phase="post", pending_id="hold"))
    check(engine)


def test_an_overdue_transfer_cannot_be_posted_even_before_expiry_is_recorded(market) -> None:
    engine, _ = market
    with session_scope(engine) as session:
        transfer(session, pending("hold", 300_000, timeout_s=1))
        start = session.scalar(
            select(LedgerTransfer.timestamp_us).order_by(LedgerTransfer.seq.desc())
        )
    with refused(engine, Conflict, "past its timeout") as session:
        book = Book(session, now=start + 2_000_000)
        book.apply([Transfer("late", amount=5, phase="post", pending_id="hold")])


# --- pricing --------------------------------------------------------------------------------


def test_the_split_rule_on_a_worked_example() -> None:
    # 490 + 225 + 500 = 1215 exactly; 10% fee = 121.5; mt's 202.5 and the fee's .5 tie: the
    # earlier line (mt) gets the odd micro-unit.
    values = [Fraction(490), Fraction(225), Fraction(500)]
    assert split(values, FEE) == (1215, [441, 203, 450], 121)


def test_a_fraction_of_a_micro_unit_is_charged_as_one() -> None:
    assert split([Fraction(1, 10)], FEE) == (1, [1], 0)
    assert split([Fraction(0)], FEE) == (0, [0], 0)


# --- metering -------------------------------------------------------------------------------


def test_settling_splits_the_charge_by_composition_citations_and_fee(market) -> None:
    engine, document_id = market
    with session_scope(engine) as session:
        settled = settle(session, usage("r-1", citations=(document_id,)), fee_bps=FEE)
    assert settled.charge == 1215  # 0.7 x 700 + 0.5 x 450 + 500
    assert [(line.account, line.kind, line.amount) for line in settled.lines] == [
        ("creator:ada", "royalty", 441),
        ("creator:carol", "royalty", 203),
        ("creator:carol", "citation", 450),
        ("platform", "fee", 121),
    ]
    assert posted(engine, "consumer:bob") == 1_000_000 - 1215
    assert posted(engine, "creator:carol") == 653
    assert posted(engine, "clearing") == 0
    check(engine)


def test_a_retried_usage_event_is_settled_once(market) -> None:
    engine, _ = market
    with session_scope(engine) as session:
        first = settle(session, usage("r-1"), fee_bps=FEE)
    with session_scope(engine) as session:
        again = settle(session, usage("r-1"), fee_bps=FEE)
        events = session.scalar(select(UsageEvent.id).where(UsageEvent.request_id == "r-1"))
    assert again.replayed and again.lines == first.lines
    assert events is not None
    assert posted(engine, "consumer:bob") == 1_000_000 - first.charge
    with refused(engine, Conflict, "tokens_out was 2000, now 2001") as session:
        settle(session, usage("r-1", tokens_out=2001), fee_bps=FEE)
    check(engine)


def test_a_reserved_request_posts_actual_usage_and_releases_the_rest(market) -> None:
    engine, _ = market
    with session_scope(engine) as session:
        most = quote(session, usage("r-1", tokens_out=4000), fee_bps=FEE)
        reserve(session, "r-1", "bob", most)
    assert available(engine, "consumer:bob") == 1_000_000 - most
    with session_scope(engine) as session:
        settled = settle(session, usage("r-1"), fee_bps=FEE)
    assert settled.reserved == most > settled.charge
    assert available(engine, "consumer:bob") == 1_000_000 - settled.charge
    check(engine)


def test_usage_above_the_reservation_is_refused(market) -> None:
    engine, _ = market
    with session_scope(engine) as session:
        reserve(session, "r-1", "bob", 10)
    with refused(engine, InvalidInput, "reserved only 10") as session:
        settle(session, usage("r-1"), fee_bps=FEE)
    check(engine)


def test_a_voided_reservation_cannot_be_settled(market) -> None:
    engine, _ = market
    with session_scope(engine) as session:
        reserve(session, "r-1", "bob", 10_000)
        void_reservation(session, "r-1")
    assert available(engine, "consumer:bob") == 1_000_000
    with refused(engine, Conflict, "reservation of request 'r-1' was voided") as session:
        settle(session, usage("r-1"), fee_bps=FEE)


def test_a_reservation_beyond_the_balance_is_refused(market) -> None:
    engine, _ = market
    with refused(engine, PaymentRequired, "top up with: viz ledger topup bob") as session:
        reserve(session, "r-1", "bob", 1_000_001)


def test_a_taken_down_adapters_share_goes_to_escrow(market) -> None:
    engine, _ = market
    with session_scope(engine) as session:
        session.execute(
            update(AdapterVersion)
            .where(AdapterVersion.price_in_micro == 50)
            .values(status="taken_down")
        )
    with session_scope(engine) as session:
        settled = settle(session, usage("r-1"), fee_bps=FEE)
    kinds = {line.adapter: (line.account, line.kind) for line in settled.lines if line.adapter}
    assert kinds["mt@1.0.0"] == ("escrow", "escrow")
    assert kinds["qa@1.0.0"] == ("creator:ada", "royalty")
    check(engine)


def test_bad_usage_is_refused_with_the_reason(market) -> None:
    engine, document_id = market
    with session_scope(engine) as session:
        add_adapter(session, "draft", "ada", price_in=1, price_out=1, status="pending")
    for bad, error, message in [
        (usage("r 1"), InvalidInput, "request id"),
        (usage("r-1", tokens_in=-1), InvalidInput, "tokens_in"),
        (usage("r-1", consumer="zed"), NotFound, "no account named 'zed'"),
        (usage("r-1", composition=(AdapterUse("nope", "1.0.0"),)), NotFound, "nope@1.0.0"),
        (usage("r-1", composition=(AdapterUse("qa", "1.0.0", 0),)), InvalidInput, "between"),
        (usage("r-1", composition=(AdapterUse("qa", "1.0.0", "inf"),)), InvalidInput, "between"),
        (
            usage("r-1", composition=(AdapterUse("qa", "1.0.0", "1e-99999"),)),
            InvalidInput,
            "between",
        ),
        (usage("r-1", composition=(AdapterUse("qa", "1.0.0", [1]),)), InvalidInput, "number"),
        (usage("r-1", composition=(AdapterUse("qa", "1.0.0", "x"),)), InvalidInput, "number"),
        (usage("r-1", composition=(AdapterUse("draft", "1.0.0"),)), InvalidInput, "pending"),
        (usage("r-1", base="other"), InvalidInput, "adapts base"),
        (usage("r-1", citations=(document_id, document_id)), InvalidInput, "once"),
        (usage("r-1", citations=(999,)), NotFound, "no document 999"),
    ]:
        with refused(engine, error, message) as session:
            settle(session, bad, fee_bps=FEE)
    with session_scope(engine) as session:
        assert session.scalar(select(UsageEvent.id)) is None
    check(engine)


def test_a_batch_settles_the_good_events_and_reports_the_refused(market) -> None:
    engine, _ = market
    batch = [usage(f"r-{i}") for i in range(20)] + [usage("r-poor", tokens_out=10**7)]
    with session_scope(engine) as session:
        outcome = settle_batch(session, [*batch, usage("r-3")], fee_bps=FEE)
    assert len(outcome.settled) == 21 and outcome.settled[-1].replayed
    assert isinstance(outcome.refused["r-poor"], PaymentRequired)
    assert posted(engine, "consumer:bob") == 1_000_000 - 20 * 715
    check(engine)


# --- payouts and statements -----------------------------------------------------------------


def test_payout_pays_what_a_creator_earned_and_the_statement_shows_it(market) -> None:
    engine, document_id = market
    with session_scope(engine) as session:
        for i in range(3):
            settle(session, usage(f"r-{i}", citations=(document_id,)), fee_bps=FEE)
    assert payout(engine, "carol", minimum=10_000) is None
    paid = payout(engine, "carol", minimum=100)
    assert paid is not None and paid.amount == 3 * 653
    assert posted(engine, "creator:carol") == 0
    with session_scope(engine) as session:
        found = statement(session, "carol")
        carol_history = history(session, "creator:carol")
    assert found.per_adapter == [("mt@1.0.0", 3, 3 * 203)]
    assert found.per_document == [(f"{document_id} A paper", 3, 3 * 450)]
    assert (found.earned, found.paid_out, found.balance) == (1959, 1959, 0)
    assert carol_history[0].kind == "payout" and carol_history[0].amount == -1959
    check(engine)


def test_a_failed_payout_is_voided_and_pays_nothing(market) -> None:
    engine, _ = market
    with session_scope(engine) as session:
        settle(session, usage("r-1"), fee_bps=FEE)

    class Failing:
        def send(self, order: PayoutOrder) -> str:
            raise Conflict(f"bank refused {order.amount}")

    with pytest.raises(Conflict, match="bank refused 441"):
        payout(engine, "ada", provider=Failing())
    assert available(engine, "creator:ada") == 441
    check(engine)


# --- verify ---------------------------------------------------------------------------------


def tamper(engine: Engine, statement_sql: str) -> None:
    with engine.begin() as connection:
        connection.execute(text(statement_sql))


@pytest.mark.parametrize(
    ("statement_sql", "message"),
    [
        ("UPDATE ledger_transfers SET amount = amount + 1 WHERE seq = 2", "breaks the hash chain"),
        (
            "UPDATE ledger_accounts SET credits_posted = credits_posted + 5 "
            "WHERE code = 'platform'",
            "stores sums",
        ),
        (
            "DELETE FROM log_entries WHERE kind = 'ledger.batch' AND \"index\" = "
            '(SELECT MAX("index") FROM log_entries)',
            "anchors transfers",
        ),
        ("UPDATE usage_events SET charge = charge + 1", "charged"),
        ("DELETE FROM ledger_pending", "open reservations"),
    ],
)
def test_verify_finds_tampering(market, statement_sql: str, message: str) -> None:
    engine, _ = market
    with session_scope(engine) as session:
        settle(session, usage("r-1"), fee_bps=FEE)
        reserve(session, "r-2", "bob", 1000)
    check(engine)
    tamper(engine, statement_sql)
    with pytest.raises(LedgerCorrupt, match=message):
        check(engine, now_us=now_us() + HOUR_US)  # an hour on: a missing anchor is no delay


def test_each_settled_batch_is_anchored_in_the_public_log(market) -> None:
    engine, _ = market
    with session_scope(engine) as session:
        settle_batch(session, [usage(f"r-{i}") for i in range(5)], fee_bps=FEE)
        entries = session.scalars(
            select(LogEntry.data).where(LogEntry.kind == "ledger.batch").order_by(LogEntry.index)
        ).all()
        last = session.scalar(select(LedgerTransfer).order_by(LedgerTransfer.seq.desc()))
    batch = json.loads(entries[-1])
    assert (batch["usage_events"], batch["transfers"], batch["last_seq"]) == (5, 20, last.seq)
    assert batch["chain"] == last.chain


def test_deferred_writes_are_anchored_by_the_next_anchor_and_a_stale_tail_is_a_finding(
    market,
) -> None:
    engine, _ = market
    with session_scope(engine) as session:  # the gateway's writes: no log entry of their own
        reserve(session, "r-1", "bob", 1000, anchor=False)
        settle(session, usage("r-1"), fee_bps=FEE, anchor=False)
        report = verify_ledger(session)
    assert report.unanchored >= 2  # young: reported, not a problem
    with session_scope(engine) as session, pytest.raises(LedgerCorrupt, match="unanchored"):
        verify_ledger(session, now_us=now_us() + HOUR_US)  # a crash left it: found

    with session_scope(engine) as session:
        entry = anchor_ledger(session)
        assert anchor_ledger(session) is None  # nothing left to anchor
        last = session.scalar(select(LedgerTransfer).order_by(LedgerTransfer.seq.desc()))
    assert entry is not None
    batch = json.loads(entry.data)
    assert batch["last_seq"] == last.seq and batch["chain"] == last.chain
    assert batch["transfers"] == report.unanchored
    assert verify_ledger_now(engine, now_us() + HOUR_US).unanchored == 0

    with session_scope(engine) as session:
        reserve(session, "r-2", "bob", 1000, anchor=False)
    with session_scope(engine) as session:  # an anchoring write covers the deferred one too
        settle(session, usage("r-2"), fee_bps=FEE)
    assert verify_ledger_now(engine, now_us() + HOUR_US).unanchored == 0


def verify_ledger_now(engine: Engine, when_us: int) -> Report:
    with session_scope(engine) as session:
        return verify_ledger(session, now_us=when_us)


def test_ledger_accounts_hold_only_known_kinds(market) -> None:
    engine, _ = market
    with session_scope(engine) as session:
        kinds = set(session.scalars(select(LedgerAccount.kind)))
    assert kinds <= {"consumer", "creator", "platform", "escrow", "clearing", "external"}


def test_escrow_is_released_once_to_the_creator_after_a_restore(market) -> None:
    engine, _ = market
    with session_scope(engine) as session:
        session.execute(
            update(AdapterVersion)
            .where(AdapterVersion.price_in_micro == 50)
            .values(status="taken_down")
        )
    with session_scope(engine) as session:
        for i in range(3):
            settle(session, usage(f"r-{i}"), fee_bps=FEE)
    assert posted(engine, "escrow") == 3 * 203
    with refused(engine, InvalidInput, "still taken down") as session:
        release_escrow(session, mt_version(session), to="creator")
    with session_scope(engine) as session:
        session.execute(
            update(AdapterVersion)
            .where(AdapterVersion.price_in_micro == 50)
            .values(status="approved")
        )
        released = release_escrow(session, mt_version(session), to="creator")
    assert (released.shares, released.amount) == (3, 609)
    with session_scope(engine) as session:
        again = release_escrow(session, mt_version(session), to="creator")
        assert statement(session, "carol").per_adapter == [("mt@1.0.0", 3, 609)]
    assert (again.amount, again.already_released) == (0, 3)
    assert posted(engine, "escrow") == 0 and posted(engine, "creator:carol") == 609
    with refused(engine, Conflict, "already released") as session:
        release_escrow(session, mt_version(session), to="consumers")
    check(engine)


def test_escrow_goes_back_to_the_consumers_when_a_takedown_is_upheld(market) -> None:
    engine, _ = market
    with session_scope(engine) as session:
        session.execute(
            update(AdapterVersion)
            .where(AdapterVersion.price_in_micro == 50)
            .values(status="taken_down")
        )
        settle(session, usage("r-1"), fee_bps=FEE)
    with session_scope(engine) as session:
        release_escrow(session, mt_version(session), to="consumers")
    assert posted(engine, "consumer:bob") == 1_000_000 - 715 + 203
    check(engine)


def mt_version(session: Session) -> AdapterVersion:
    return session.scalars(select(AdapterVersion).where(AdapterVersion.price_in_micro == 50)).one()


# --- found in review: each of these once let money move wrongly -----------------------------


def test_a_pending_transfer_with_the_longest_id_still_expires(market) -> None:
    engine, _ = market
    with session_scope(engine) as session:
        transfer(session, pending("p" * 160, 300_000, timeout_s=1))
        start = session.scalar(
            select(LedgerTransfer.timestamp_us).order_by(LedgerTransfer.seq.desc())
        )
    with session_scope(engine) as session:
        (expired,) = expire_overdue(session, now_us=start + 2_000_000)
    assert expired.pending_id == "p" * 160
    check(engine)


def test_a_lost_payout_answer_is_resent_under_the_same_id_never_paid_twice(market) -> None:
    engine, _ = market
    with session_scope(engine) as session:
        settle(session, usage("r-1"), fee_bps=FEE)
    sent: list[PayoutOrder] = []

    class LosesTheAnswer:
        def send(self, order: PayoutOrder) -> str:
            sent.append(order)
            raise TimeoutError("the bank's answer never came")

    class Answers:
        def send(self, order: PayoutOrder) -> str:
            sent.append(order)
            return f"bank-{order.transfer_id}"

    with pytest.raises(VizError, match="answer was lost"):
        payout(engine, "ada", provider=LosesTheAnswer())
    with session_scope(engine) as session:  # a payout in flight never expires
        assert expire_overdue(session, now_us=2**62) == []
    assert available(engine, "creator:ada") == 0
    assert payout(engine, "ada", provider=Answers()) is None  # settled the lost one; 0 left
    assert [order.transfer_id for order in sent] == [sent[0].transfer_id] * 2
    assert posted(engine, "creator:ada") == 0 and posted(engine, "external") == -1_000_000 + 441
    check(engine)


def test_usage_cannot_be_settled_against_another_consumers_reservation(market) -> None:
    engine, _ = market
    with session_scope(engine) as session:
        topup(session, "dan", 10_000, transfer_id="dan-first")
        reserve(session, "r-1", "bob", 10_000)
    with refused(engine, InvalidInput, "reserved by consumer:bob") as session:
        settle(session, usage("r-1", consumer="dan"), fee_bps=FEE)
    check(engine)


def test_a_settled_request_cannot_be_reserved_again(market) -> None:
    engine, _ = market
    with session_scope(engine) as session:
        settle(session, usage("r-1"), fee_bps=FEE)
    with refused(engine, Conflict, "already settled") as session:
        reserve(session, "r-1", "bob", 10_000)


def test_client_transfers_cannot_pose_as_settlement(market) -> None:
    engine, _ = market
    for bad, message in [
        (Transfer("k", "consumer:bob", "consumer:dan", 1, kind="escrow"), "Viz's own"),
        (Transfer("k", "consumer:bob", "consumer:dan", 1, request_id="r-1"), "set by metering"),
        (Transfer("k", "consumer:bob", "clearing", 1), "only during settlement"),
        (Transfer(None, "consumer:bob", "external", 1), "must be text"),  # type: ignore[arg-type]
        (Transfer("k", "consumer:bob", "external", 1, memo="m" * 201), "at most 200"),
    ]:
        with refused(engine, InvalidInput, message) as session:
            transfer(session, bad)


def test_a_pending_retry_with_another_timeout_is_refused(market) -> None:
    engine, _ = market
    with session_scope(engine) as session:
        transfer(session, pending("hold", 5, timeout_s=60))
    with refused(engine, Conflict, "timeout_s") as session:
        transfer(session, pending("hold", 5, timeout_s=600_000))


@pytest.mark.parametrize(
    ("statement_sql", "message"),
    [
        (
            "UPDATE usage_events SET consumer_id = (SELECT id FROM accounts WHERE name = 'dan')",
            "but its charge debited",
        ),
        ("UPDATE ledger_accounts SET kind = 'external' WHERE code = 'consumer:bob'", "has kind"),
        (
            "UPDATE ledger_accounts SET credit_limit = 99 WHERE code = 'consumer:bob'",
            "last set it to 0",
        ),
    ],
)
def test_verify_finds_tampering_with_events_and_account_settings(
    market, statement_sql: str, message: str
) -> None:
    engine, _ = market
    with session_scope(engine) as session:
        settle(session, usage("r-1"), fee_bps=FEE)
        set_credit_limit(session, "dan", 7)
    check(engine)  # a logged credit limit is fine
    tamper(engine, statement_sql)
    with pytest.raises(LedgerCorrupt, match=message):
        check(engine)


def test_a_request_that_outlives_its_reservation_is_charged_directly(market) -> None:
    engine, _ = market
    with session_scope(engine) as session:
        reserve(session, "r-1", "bob", 5_000, timeout_s=1)
        start = session.scalar(
            select(LedgerTransfer.timestamp_us).order_by(LedgerTransfer.seq.desc())
        )
    with session_scope(engine) as session:
        settled = settle(session, usage("r-1"), fee_bps=FEE, now_us=start + 2_000_000)
    assert settled.reserved == 0 and settled.charge == 715
    assert available(engine, "consumer:bob") == 1_000_000 - 715
    with refused(engine, Conflict, "already settled") as session:
        reserve(session, "r-1", "bob", 5_000)
    with session_scope(engine) as session:
        reserve(session, "r-2", "bob", 5_000, timeout_s=1, now_us=start)
        expire_overdue(session, now_us=start + 2_000_000)
    with refused(engine, Conflict, "reservation is expired") as session:
        reserve(session, "r-2", "bob", 5_000, timeout_s=1, now_us=start)
    check(engine)
