"""The ledger under stress: random operation sequences (hypothesis), SIGKILL at random points,
and eight processes spending from one consumer at once."""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, func, select

from tests.ledger_worker import FEE_BPS, crash_usage
from viz.errors import VizError
from viz.ledger import (
    AdapterUse,
    Book,
    Transfer,
    Usage,
    balances,
    quote,
    reserve,
    settle,
    topup,
    verify_ledger,
)
from viz.ledger.pricing import split
from viz.store import open_database, session_scope
from viz.store.schema import LedgerAccount, LedgerTransfer, UsageEvent
from worlds.catalogue import REPO
from worlds.ledger import BASE, build_market

# --- the split rule -------------------------------------------------------------------------

values = st.lists(
    st.fractions(min_value=0, max_value=10**9, max_denominator=10**6), min_size=1, max_size=20
)


@given(values=values, fee_bps=st.integers(0, 10_000))
def test_the_split_never_creates_or_loses_a_micro_unit(values, fee_bps) -> None:
    charge, amounts, fee = split(values, fee_bps)
    total = sum(values)
    assert total <= charge < total + 1
    assert sum(amounts) + fee == charge
    assert all(amount >= 0 for amount in amounts)
    if charge:
        keep = 1 - Fraction(fee_bps, 10_000)
        for value, amount in zip(values, amounts, strict=True):
            assert abs(amount - value * charge / total * keep) < 1


# --- random sequences -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite market, copied fresh for every example."""
    path = tmp_path_factory.mktemp("ledger-template") / "viz.db"
    engine = open_database(f"sqlite:///{path}")
    build_market(engine)
    engine.dispose()
    return path


CONSUMERS = ["consumer:bob", "consumer:dan"]
IDS = [f"t{i}" for i in range(6)]
operations = st.one_of(
    st.tuples(
        st.just("topup"), st.sampled_from(CONSUMERS), st.integers(1, 10**6), st.sampled_from(IDS)
    ),
    st.tuples(
        st.just("move"),
        st.sampled_from(CONSUMERS),
        st.integers(1, 2 * 10**6),
        st.sampled_from(IDS),
    ),
    st.tuples(
        st.just("pending"), st.sampled_from(CONSUMERS), st.integers(1, 10**6), st.sampled_from(IDS)
    ),
    st.tuples(st.just("post"), st.sampled_from(IDS), st.integers(0, 10**6), st.sampled_from(IDS)),
    st.tuples(st.just("void"), st.sampled_from(IDS), st.just(0), st.sampled_from(IDS)),
    st.tuples(st.just("wait"), st.just(""), st.integers(1, 120), st.just("")),
    st.tuples(
        st.just("reserve"), st.sampled_from(["r0", "r1", "r2"]), st.integers(1, 3000), st.just("")
    ),
    st.tuples(
        st.just("settle"), st.sampled_from(["r0", "r1", "r2"]), st.integers(0, 3000), st.just("")
    ),
)


def snapshot(engine: Engine) -> tuple[object, ...]:
    with session_scope(engine) as session:
        return (
            tuple(
                session.execute(
                    select(
                        LedgerAccount.code,
                        LedgerAccount.debits_pending,
                        LedgerAccount.debits_posted,
                        LedgerAccount.credits_pending,
                        LedgerAccount.credits_posted,
                    ).order_by(LedgerAccount.code)
                )
            ),
            session.scalar(select(func.count()).select_from(LedgerTransfer)),
            session.scalar(select(func.count()).select_from(UsageEvent)),
        )


def run(engine: Engine, operation: tuple[str, str, int, str], clock: int) -> object:
    kind, subject, amount, transfer_id = operation
    with session_scope(engine) as session:
        if kind == "reserve":
            return reserve(session, subject, "bob", amount, timeout_s=60, now_us=clock)
        if kind == "settle":
            usage = Usage(subject, "bob", BASE, 100, amount, (AdapterUse("qa", "1.0.0", "0.5"),))
            return settle(session, usage, fee_bps=FEE_BPS, now_us=clock)
        book = Book(session, now=clock)
        book.expire_overdue()
        if kind == "topup":
            book.open_accounts({"external", subject})
            request = Transfer(transfer_id, "external", subject, amount, kind="topup")
        elif kind == "move":
            other = CONSUMERS[1 - CONSUMERS.index(subject)]
            book.open_accounts({subject, other})
            request = Transfer(transfer_id, subject, other, amount)
        elif kind == "pending":
            book.open_accounts({subject, "external"})
            request = Transfer(
                transfer_id, subject, "external", amount, phase="pending", timeout_s=60
            )
        else:
            request = Transfer(
                f"{kind}-{transfer_id}", amount=amount, phase=kind, pending_id=subject
            )
        result = book.apply([request])
        book.finish()
        return result


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(sequence=st.lists(operations, max_size=20))
def test_random_sequences_keep_every_invariant(template: Path, tmp_path_factory, sequence) -> None:
    path = tmp_path_factory.mktemp("ledger") / "viz.db"
    shutil.copy(template, path)
    engine = open_database(f"sqlite:///{path}", upgrade_schema=False)
    clock = time.time_ns() // 1000
    try:
        for operation in sequence:
            if operation[0] == "wait":
                clock += operation[2] * 1_000_000
                continue
            before = snapshot(engine)
            try:
                first = run(engine, operation, clock)
            except VizError:
                assert snapshot(engine) == before, f"{operation} was refused but left a trace"
            else:
                after = snapshot(engine)
                again = run(engine, operation, clock)  # a retry is answered, not re-applied
                assert snapshot(engine) == after, f"retrying {operation} changed the ledger"
                assert _comparable(again) == _comparable(first)
            with session_scope(engine) as session:
                verify_ledger(session)
    finally:
        engine.dispose()


def _comparable(result: object) -> object:
    if isinstance(result, list):
        return [_comparable(item) for item in result]
    fields = getattr(result, "__dict__", None) or {
        name: getattr(result, name) for name in getattr(result, "__dataclass_fields__", {})
    }
    return {
        k: v for k, v in fields.items() if k not in ("replayed", "expires_at_us", "timestamp_us")
    }


# --- crashes --------------------------------------------------------------------------------

CRASH_EVENTS = 400
KILLS = 50


def test_sigkill_at_random_points_loses_nothing_and_settles_nothing_twice(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'viz.db'}"
    engine = open_database(url)
    document_id = build_market(engine)
    with session_scope(engine) as session:
        topup(session, "bob", 10**12, transfer_id="crash-funds")
        charge = quote(session, crash_usage(0, document_id), fee_bps=FEE_BPS)
    rng = random.Random(6)
    acknowledged = 0
    kills = 0
    command = [
        sys.executable,
        "-m",
        "tests.ledger_worker",
        "crash",
        url,
        str(CRASH_EVENTS),
        str(document_id),
    ]
    while True:
        worker = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, text=True)
        assert worker.stdout is not None
        assert worker.stdout.readline().strip() == "ready"
        if kills < KILLS:
            time.sleep(rng.uniform(0.0, 0.25))
            worker.send_signal(signal.SIGKILL)
            kills += 1
        output, _ = worker.communicate(timeout=300)
        done = [int(line.split()[1]) for line in output.splitlines() if line.startswith("done")]
        acknowledged = max([acknowledged, *done])
        with session_scope(engine) as session:
            verify_ledger(session)  # every invariant, the hash chain and the log
            settled = set(session.scalars(select(UsageEvent.request_id)))
        missing = {f"crash-{i}" for i in range(acknowledged)} - settled
        assert not missing, f"acknowledged events lost after kill {kills}: {sorted(missing)[:5]}"
        if worker.returncode == 0:
            break
        assert worker.returncode == -signal.SIGKILL
    assert kills == KILLS
    with session_scope(engine) as session:
        assert session.scalar(select(func.count()).select_from(UsageEvent)) == CRASH_EVENTS
        (bob,) = balances(session, "consumer:bob")
    assert bob.posted == 10**12 - CRASH_EVENTS * charge
    assert bob.pending_debits == 0
    engine.dispose()


# --- concurrency ----------------------------------------------------------------------------

WORKERS = 8
EVENTS_PER_WORKER = 30
AFFORDABLE = 100


def test_eight_processes_spending_from_one_consumer_end_exact(engine: Engine) -> None:
    build_market(engine)
    charge = 400  # qa: (1000 x 100 + 1000 x 300) / 1000
    with session_scope(engine) as session:
        topup(session, "bob", AFFORDABLE * charge + charge - 1, transfer_id="funds")
    url = engine.url.render_as_string(hide_password=False)
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.ledger_worker",
                "spend",
                url,
                f"w{n}",
                str(EVENTS_PER_WORKER),
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in range(WORKERS)
    ]
    settled = 0
    for worker in workers:
        output, _ = worker.communicate(timeout=300)
        assert worker.returncode == 0, output
        settled += int(output.split()[1])
    assert settled == AFFORDABLE
    with session_scope(engine) as session:
        (bob,) = balances(session, "consumer:bob")
        assert session.scalar(select(func.count()).select_from(UsageEvent)) == AFFORDABLE
        verify_ledger(session)
    assert bob.posted == charge - 1


@given(text=st.text(max_size=40), number=st.integers(0, 2**62))
def test_the_chain_line_is_exactly_compact_json(text: str, number: int) -> None:
    from viz.ledger.chain import canonical_line
    from viz.ledger.transfers import Posted

    posted = Posted(
        number,
        text,
        "consumer:x",
        "clearing",
        5,
        "post",
        "charge",
        None,
        text,
        None,
        number,
        text,
        None,
        number,
    )
    expected = [
        number,
        text,
        "consumer:x",
        "clearing",
        5,
        "post",
        3,
        None,
        "charge",
        text,
        None,
        number,
        text,
        number,
    ]
    assert (
        canonical_line(posted, 3)
        == json.dumps(expected, separators=(",", ":"), ensure_ascii=False).encode()
    )
