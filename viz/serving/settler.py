"""Settling after the answer: a delivered request is settled by a background thread, many per
transaction, instead of on the response path.

    settler = Settler(database, settings)
    deliver(session, usage)          # viz.serving.leases, with the answer, in one commit
    settler.submit(usage.request_id) # after that commit: the answer goes out now
    settler.flush()                  # wait until everything submitted is settled
    settler.close()                  # flush, then stop the thread
    wait_settled(database)           # any process: until no delivered request awaits settling

Nothing is lost if the process dies in between: the delivered row (`requests_in_flight`, with
its final usage) stays until its settlement commits, in the same transaction that deletes it,
and recovery (`viz.serving.leases.resolve`) settles a delivered row in full. Until then the
consumer's reservation holds at least the amount due, so a balance is never overspent; a
settlement lands within milliseconds of its answer (`viz ledger` readers may see the hold for
that long).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Sequence

from sqlalchemy import Engine, delete, func, select
from sqlalchemy.orm import Session

from viz.ledger import settle_batch
from viz.serving.leases import stored_usage
from viz.store.database import session_scope
from viz.store.gateway import RequestInFlight

__all__ = ["BATCH_MAX", "Settler", "settle_delivered", "unsettled", "wait_settled"]

log = logging.getLogger("viz.serving")

BATCH_MAX = 256  # settlements per transaction
GATHER_S = 0.05  # a batch gathers this long after its first request (settled meanwhile by flush)
RETRY_S = 0.5  # after a database error, try the batch again this much later


def unsettled(session: Session) -> int:
    """How many delivered requests (any process's) await their settlement."""
    return (
        session.scalar(
            select(func.count())
            .select_from(RequestInFlight)
            .where(RequestInFlight.delivered_at_us.is_not(None))
        )
        or 0
    )


def wait_settled(database: Engine, timeout_s: float = 10.0) -> bool:
    """Wait until every delivered request is settled (a reader that must see an answer's
    settlement: balances, statements); False if `timeout_s` passed first."""
    deadline = time.monotonic() + timeout_s
    while True:
        with session_scope(database) as session:
            if not unsettled(session):
                return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)


def settle_delivered(session: Session, request_ids: Sequence[str], *, fee_bps: int) -> int:
    """Settle the delivered requests among `request_ids` and delete their rows, in the caller's
    transaction (one settlement refused is logged and dropped, as recovery does). Returns how
    many were settled; ids already settled (by recovery) are skipped."""
    rows = list(
        session.scalars(
            select(RequestInFlight).where(
                RequestInFlight.request_id.in_(list(request_ids)),
                RequestInFlight.delivered_at_us.is_not(None),
            )
        )
    )
    if not rows:
        return 0
    outcome = settle_batch(
        session, [stored_usage(row) for row in rows], fee_bps=fee_bps, anchor=False
    )
    for request_id, error in outcome.refused.items():
        log.warning(json.dumps({"request_id": request_id, "settle_error": error.message}))
    session.execute(
        delete(RequestInFlight).where(
            RequestInFlight.request_id.in_([row.request_id for row in rows])
        )
    )
    return len(outcome.settled)


class Settler:
    """This process's settler thread: settles what `submit` hands it, in batches of at most
    BATCH_MAX per transaction. A batch gathers for `gather_s` after its first request, so a
    settlement runs while the next requests generate rather than on their way in, and many
    share one commit under load."""

    def __init__(self, database: Engine, *, fee_bps: int, gather_s: float = GATHER_S) -> None:
        self.database, self.fee_bps, self.gather_s = database, fee_bps, gather_s
        self._hurry = 0  # flushes waiting
        self.settled = 0
        self._pending: list[str] = []
        self._busy = False
        self._stopping = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="viz-settler", daemon=True)
        self._thread.start()

    def submit(self, request_id: str) -> None:
        """Settle `request_id` soon (its delivery is committed)."""
        with self._changed:
            self._pending.append(request_id)
            self._changed.notify_all()

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until every submitted request is settled; False if `timeout_s` passed first."""
        with self._changed:
            self._hurry += 1
            self._changed.notify_all()
            done = self._changed.wait_for(
                lambda: not self._pending and not self._busy, timeout=timeout_s
            )
            self._hurry -= 1
            return done

    def close(self, timeout_s: float = 10.0) -> None:
        """Settle what is pending, then stop (what is left is settled by recovery)."""
        self.flush(timeout_s)
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
        self._thread.join(timeout=timeout_s)

    def _run(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._pending or self._stopping)
                if self._stopping:
                    return
                self._changed.wait_for(  # gather: more requests, or a flush, or full
                    lambda: self._hurry or self._stopping or len(self._pending) >= BATCH_MAX,
                    timeout=self.gather_s,
                )
                batch = self._pending[:BATCH_MAX]
                del self._pending[:BATCH_MAX]
                self._busy = True
            failed = False
            try:
                with session_scope(self.database) as session:
                    self.settled += settle_delivered(session, batch, fee_bps=self.fee_bps)
            except Exception as error:  # noqa: BLE001 - a database hiccup: try again shortly
                failed = True
                log.warning(json.dumps({"settler_error": str(error), "requests": len(batch)}))
            with self._changed:
                if failed:
                    self._pending[:0] = batch
                self._busy = False
                self._changed.notify_all()
            if failed:
                time.sleep(RETRY_S)
