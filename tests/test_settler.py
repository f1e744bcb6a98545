"""Settling after the answer (viz.serving.settler): a delivered request is settled in full once,
by the settler or, if its process dies first, by recovery; nothing is lost or charged twice.

The gateway's own path (deliver, then the settler) is exercised end to end by
tests/test_serving.py; here the steps are driven one by one on SQLite and PostgreSQL.
"""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, func, select

from viz.ledger import AdapterUse, Usage, balances, quote, reserve, topup, verify_ledger
from viz.serving.leases import deliver, recover, track
from viz.serving.settler import Settler, settle_delivered, unsettled, wait_settled
from viz.store import session_scope
from viz.store.gateway import RequestInFlight, ServeLease
from viz.store.schema import UsageEvent
from worlds.ledger import BASE, build_market

FEE_BPS = 1000
LEASE = "lease-a"


@pytest.fixture
def world(engine: Engine) -> tuple[Engine, int]:
    """The ledger world's market, bob topped up, and lease LEASE (lapsed); carol's document."""
    document = build_market(engine)
    with session_scope(engine) as session:
        topup(session, "bob", 1_000_000, transfer_id="bob-first")
        session.add(ServeLease(id=LEASE, host="elsewhere", pid=1, started_at_us=0, expires_at_us=0))
    return engine, document


@pytest.fixture
def market(world: tuple[Engine, int]) -> Engine:
    return world[0]


def usage(request_id: str, tokens_out: int, citations: tuple[int, ...] = ()) -> Usage:
    return Usage(
        request_id,
        "bob",
        BASE,
        tokens_in=400,
        tokens_out=tokens_out,
        composition=(AdapterUse("qa", "1.0.0"),),
        citations=citations,
    )


def served(engine: Engine, request_id: str, tokens_out: int, cited: tuple[int, ...] = ()) -> None:
    """What the gateway does for one answered request: reserve for 64 tokens (and every source
    cited) and track it, then record its delivery (left to whoever settles it)."""
    with session_scope(engine) as session:
        most = quote(session, usage(request_id, 64, cited), fee_bps=FEE_BPS)
        reserve(session, request_id, "bob", most, anchor=False)
        track(session, LEASE, usage(request_id, 0))
    with session_scope(engine) as session:
        deliver(session, usage(request_id, tokens_out, cited))


def events(engine: Engine) -> dict[str, UsageEvent]:
    with session_scope(engine) as session:
        found = {event.request_id: event for event in session.scalars(select(UsageEvent))}
        session.expunge_all()
        return found


def posted(engine: Engine, code: str) -> int:
    with session_scope(engine) as session:
        return balances(session, code)[0].posted


def test_the_settler_settles_delivered_requests_in_full_and_once(market: Engine) -> None:
    for n in range(5):
        served(market, f"req-{n}", tokens_out=10 * (n + 1))
    with session_scope(market) as session:
        assert unsettled(session) == 5
    settler = Settler(market, fee_bps=FEE_BPS)
    try:
        for n in range(5):
            settler.submit(f"req-{n}")
        settler.submit("req-0")  # submitted twice: settled once
        assert settler.flush()
    finally:
        settler.close()

    assert settler.settled == 5
    found = events(market)
    assert sorted(found) == [f"req-{n}" for n in range(5)]
    assert [found[f"req-{n}"].tokens_out for n in range(5)] == [10, 20, 30, 40, 50]
    assert posted(market, "consumer:bob") == 1_000_000 - sum(e.charge for e in found.values())
    with session_scope(market) as session:
        assert session.scalar(select(func.count()).select_from(RequestInFlight)) == 0
        assert balances(session, "consumer:bob")[0].pending_debits == 0  # every hold released
        verify_ledger(session)


def test_a_process_dying_before_its_settler_ran_is_settled_in_full_by_recovery(
    world: tuple[Engine, int],
) -> None:
    market, document = world
    served(market, "req-cited", tokens_out=12, cited=(document,))
    served(market, "req-empty", tokens_out=0)  # answered with no tokens: its prompt is paid

    counts = recover(market, LEASE, fee_bps=FEE_BPS)  # the lease lapsed: its settler never ran

    assert counts == {"settled": 2}
    found = events(market)
    assert found["req-cited"].tokens_out == 12
    assert posted(market, "creator:carol") >= 500 * (10_000 - FEE_BPS) // 10_000  # the citation
    assert found["req-empty"].tokens_out == 0 and found["req-empty"].charge > 0
    assert wait_settled(market, timeout_s=0.1)
    with session_scope(market) as session:  # a settler arriving late finds nothing to do
        assert settle_delivered(session, ["req-cited", "req-empty"], fee_bps=FEE_BPS) == 0
    assert len(events(market)) == 2
    with session_scope(market) as session:
        verify_ledger(session)


def test_a_request_still_running_is_not_settled_by_the_settler(market: Engine) -> None:
    with session_scope(market) as session:
        reserve(session, "req-running", "bob", 5_000, anchor=False)
        track(session, LEASE, usage("req-running", 0))
    with session_scope(market) as session:
        assert settle_delivered(session, ["req-running"], fee_bps=FEE_BPS) == 0
        assert unsettled(session) == 0
    assert events(market) == {}
    with session_scope(market) as session:
        assert session.get(RequestInFlight, "req-running") is not None
