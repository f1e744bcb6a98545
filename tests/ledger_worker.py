"""Worker processes for the ledger's crash and concurrency tests (run with `python -m`).

    python -m tests.ledger_worker crash URL EVENTS   settle EVENTS usage events, retrying all
    python -m tests.ledger_worker spend URL PREFIX COUNT   settle COUNT events, one per commit

`crash` prints `ready` once the database is open and `done N` after each commit that settled
events 0..N-1 (every third reserved first, the others in batches); the test kills it with
SIGKILL at random points and starts it again.
"""

from __future__ import annotations

import sys

from viz.errors import Conflict, PaymentRequired
from viz.ledger import AdapterUse, Usage, reserve, settle, settle_batch
from viz.store import open_database, session_scope

BASE = "smollm2-135m-instruct"
FEE_BPS = 1000


def crash_usage(index: int, document_id: int) -> Usage:
    """Event `index` of the crash test: the same price each time, so totals are known."""
    return Usage(
        request_id=f"crash-{index}",
        consumer="bob",
        base=BASE,
        tokens_in=300,
        tokens_out=700,
        composition=(AdapterUse("qa", "1.0.0", "0.7"), AdapterUse("mt", "1.0.0", "0.3")),
        citations=(document_id,),
    )


def crash(url: str, events: int, document_id: int) -> None:
    engine = open_database(url)
    print("ready", flush=True)
    index = 0
    while index < events:
        if index % 3 == 0:  # reserved, then settled in a second transaction
            usage = crash_usage(index, document_id)
            try:
                with session_scope(engine) as session:
                    reserve(session, usage.request_id, "bob", 100_000)
            except Conflict:
                pass  # settled before a kill: settling again below returns the first result
            with session_scope(engine) as session:
                settle(session, usage, fee_bps=FEE_BPS)
            index += 1
        else:  # the events up to the next multiple of 3, in one batch
            batch = []
            while index < events and index % 3 != 0:
                batch.append(crash_usage(index, document_id))
                index += 1
            with session_scope(engine) as session:
                outcome = settle_batch(session, batch, fee_bps=FEE_BPS)
            assert not outcome.refused, outcome.refused
        print(f"done {index}", flush=True)


def spend(url: str, prefix: str, count: int) -> None:
    engine = open_database(url, upgrade_schema=False)
    settled = refused = 0
    for index in range(count):
        usage = Usage(
            request_id=f"{prefix}-{index}",
            consumer="bob",
            base=BASE,
            tokens_in=1000,
            tokens_out=1000,
            composition=(AdapterUse("qa", "1.0.0"),),
        )
        try:
            with session_scope(engine) as session:
                settle(session, usage, fee_bps=FEE_BPS)
            settled += 1
        except PaymentRequired:
            refused += 1
    print(f"settled {settled} refused {refused}", flush=True)


if __name__ == "__main__":
    command, url, *rest = sys.argv[1:]
    if command == "crash":
        crash(url, int(rest[0]), int(rest[1]))
    else:
        spend(url, rest[0], int(rest[1]))
