"""Benchmark: settling usage events in the ledger, on SQLite and PostgreSQL.

Measures, in one process, on each database (no time is asserted):

1. batched: usage events settled per second, `settle_batch` of BATCH events per transaction
   (each event: a charge, a royalty, a citation and a fee transfer, a usage-event row, the
   chain hashes and one log entry per batch);
2. one at a time: one event per transaction, events/s and p50/p99 latency;
3. reserved: reserve at request start, settle at its end (two transactions, as serving does):
   p50/p99 of the pair;
4. verify: transfers per second `viz ledger verify` rechecks;
5. baseline, same process and database: a bare `INSERT` of the same transfer rows with
   executemany and no checks, locks, idempotency or hashing: ledger / bare is what the ledger's
   guarantees cost. The anchor is TigerBeetle's 1M transfers/s (a ceiling, not a target).

Example:

    .venv/bin/python bench/ledger.py
    .venv/bin/python bench/ledger.py --events 20000 --batch 1000 --single 500
    VIZ_TEST_POSTGRES_URL=postgresql+psycopg://viz:viz@127.0.0.1:5432/viz_test \\
        .venv/bin/python bench/ledger.py
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import create_engine, insert, text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from viz.ledger import AdapterUse, Usage, reserve, settle, settle_batch, topup, verify_ledger  # noqa: E402
from viz.store import open_database, session_scope  # noqa: E402
from viz.store.schema import LedgerTransfer  # noqa: E402
from worlds.ledger import BASE, build_market  # noqa: E402

FEE_BPS = 1000
TIGERBEETLE_PER_S = 1_000_000


def usage(request_id: str, document_id: int, tokens_out: int = 200) -> Usage:
    return Usage(
        request_id=request_id,
        consumer="bob",
        base=BASE,
        tokens_in=500,
        tokens_out=tokens_out,
        composition=(AdapterUse("qa", "1.0.0"),),
        citations=(document_id,),
    )


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def bench(url: str, label: str, events: int, batch: int, single: int) -> None:
    engine = open_database(url)
    document_id = build_market(engine)
    with session_scope(engine) as session:
        topup(session, "bob", 10**14, transfer_id="bench-funds")

    start = time.perf_counter()
    for first in range(0, events, batch):
        with session_scope(engine) as session:
            outcome = settle_batch(
                session,
                [usage(f"b-{i}", document_id) for i in range(first, min(first + batch, events))],
                fee_bps=FEE_BPS,
            )
            assert not outcome.refused
    batched_s = time.perf_counter() - start
    batched_rate = events / batched_s

    latencies = []
    for i in range(single):
        start = time.perf_counter()
        with session_scope(engine) as session:
            settle(session, usage(f"s-{i}", document_id), fee_bps=FEE_BPS)
        latencies.append(time.perf_counter() - start)
    single_rate = single / sum(latencies)

    pairs = []
    for i in range(single):
        start = time.perf_counter()
        with session_scope(engine) as session:
            reserve(session, f"r-{i}", "bob", 10_000)
        with session_scope(engine) as session:
            settle(session, usage(f"r-{i}", document_id), fee_bps=FEE_BPS)
        pairs.append(time.perf_counter() - start)

    with session_scope(engine) as session:
        start = time.perf_counter()
        report = verify_ledger(session)
        verify_s = time.perf_counter() - start

    # Baseline: the same number of transfer rows as the batched run, bare executemany inserts
    # into a copy of the table with no constraints beyond its primary key.
    rows_per_event = 4
    bare_rows = events * rows_per_event
    with engine.begin() as connection:
        connection.execute(
            text("CREATE TABLE bench_bare AS SELECT * FROM ledger_transfers WHERE 1 = 0")
        )
    bare = LedgerTransfer.__table__.to_metadata(
        __import__("sqlalchemy").MetaData(), name="bench_bare"
    )
    start = time.perf_counter()
    for first in range(0, bare_rows, batch * rows_per_event):
        with engine.begin() as connection:
            connection.execute(
                insert(bare),
                [
                    {
                        "seq": n,
                        "transfer_id": f"x{n}",
                        "debit_id": 1,
                        "credit_id": 2,
                        "amount": 1,
                        "phase": "single",
                        "pending_seq": None,
                        "expires_at_us": None,
                        "kind": "charge",
                        "request_id": f"x{n // 4}",
                        "adapter_version_id": None,
                        "document_id": None,
                        "memo": "",
                        "timestamp_us": n,
                        "chain": "0" * 64,
                    }
                    for n in range(first, min(first + batch * rows_per_event, bare_rows))
                ],
            )
    bare_s = time.perf_counter() - start
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE bench_bare"))
    engine.dispose()

    print(f"\n## {label}")
    print(
        f"batched ({batch}/transaction): {events:,} events in {batched_s:.2f} s = "
        f"{batched_rate:,.0f} events/s ({batched_rate * rows_per_event:,.0f} transfers/s)"
    )
    print(
        f"one at a time: {single_rate:,.0f} events/s; latency p50 "
        f"{percentile(latencies, 0.5) * 1e3:.2f} ms, p99 {percentile(latencies, 0.99) * 1e3:.2f} ms"
    )
    print(
        f"reserve + settle (two transactions): p50 {percentile(pairs, 0.5) * 1e3:.2f} ms, "
        f"p99 {percentile(pairs, 0.99) * 1e3:.2f} ms, mean {statistics.mean(pairs) * 1e3:.2f} ms"
    )
    print(
        f"verify: {report.transfers:,} transfers in {verify_s:.2f} s = "
        f"{report.transfers / verify_s:,.0f} transfers/s"
    )
    print(
        f"baseline bare insert of {bare_rows:,} rows: {bare_s:.2f} s = "
        f"{bare_rows / bare_s:,.0f} rows/s"
    )
    transfers_rate = batched_rate * rows_per_event
    print(
        f"ratios: batched / one-at-a-time = {batched_rate / single_rate:.1f}x; "
        f"ledger transfers / bare inserts = {transfers_rate / (bare_rows / bare_s):.2f}; "
        f"ledger transfers / TigerBeetle 1M/s = {transfers_rate / TIGERBEETLE_PER_S:.4f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000, help="Events settled in batches")
    parser.add_argument("--batch", type=int, default=1000, help="Events per batch")
    parser.add_argument("--single", type=int, default=500, help="Events settled one at a time")
    args = parser.parse_args()
    print(
        f"# bench/ledger.py on {platform.node()} ({os.cpu_count()} CPUs), Python "
        f"{platform.python_version()}"
    )
    with tempfile.TemporaryDirectory() as folder:
        bench(
            f"sqlite:///{folder}/viz.db", "SQLite (WAL, file)", args.events, args.batch, args.single
        )
    url = os.environ.get(
        "VIZ_TEST_POSTGRES_URL", "postgresql+psycopg://viz:viz@127.0.0.1:5432/viz_test"
    )
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    try:
        admin = create_engine(url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as error:  # noqa: BLE001 - any failure means no server to measure
        print(
            f"\n## PostgreSQL: skipped ({type(error).__name__}: run scripts/postgres-test-server)"
        )
        return
    try:
        bench(
            f"{url}?options=-csearch_path%3D{schema}",
            "PostgreSQL 15 (loopback)",
            args.events,
            args.batch,
            args.single,
        )
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


if __name__ == "__main__":
    main()
