"""Leases: which `viz serve` process holds which requests, and what happens when one dies.

    keeper = Keeper(database, settings)     # takes a lease (a row) and renews it every ttl/3
    track(session, keeper.lease_id, usage)  # in the transaction that reserves a request
    progress(database, request_id, tokens)  # a stream, every VIZ_PROGRESS_INTERVAL_S
    deliver(session, usage)                 # answered: final usage, settled after the answer
    keeper.close()                          # on shutdown: the lease row is deleted

A lease lapses when its `expires_at_us` passes, or at once when it names a process of this host
that no longer runs (a restart after a crash does not wait out the TTL). `recover` then resolves
each of its requests: a delivered one is settled in full, as its settler would have; otherwise
the tokens it had sent are settled (void where none were), its
Idempotency-Key is marked failed so that a retry runs a new attempt, and the lease is deleted.
Every replica's keeper recovers lapsed leases, so a request is never left holding funds.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

from sqlalchemy import Engine, delete, or_, select, update
from sqlalchemy.orm import Session

from viz.config import Settings
from viz.errors import VizError
from viz.ledger import (
    AdapterUse,
    Usage,
    anchor_ledger,
    reservation_state,
    settle,
    void_reservation,
)
from viz.ledger.anchors import unanchored
from viz.store.database import session_scope
from viz.store.gateway import IdempotencyKey, RequestInFlight, ServeLease
from viz.store.windows import purge_windows

__all__ = [
    "Keeper",
    "deliver",
    "lapsed_leases",
    "lease_alive",
    "progress",
    "recover",
    "resolve",
    "stored_usage",
    "track",
]

log = logging.getLogger("viz.serving")


def _host() -> str:
    """This host and PID namespace: only a process of the same namespace checks another's pid
    (two containers may share a host name, never a PID namespace)."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:  # not Linux: the host name alone
        namespace = ""
    return f"{socket.gethostname()}/{namespace}"[:200]


HOST = _host()
JANITOR_EVERY_S = 60.0  # evicting old answers and rate windows: not on every renewal


def _now_us() -> int:
    return time.time_ns() // 1000


def track(session: Session, lease_id: str, usage: Usage) -> None:
    """Record that `lease_id` serves `usage`'s request (in the reservation's transaction)."""
    session.add(
        RequestInFlight(
            request_id=usage.request_id,
            lease_id=lease_id,
            usage_json=json.dumps(dataclasses.asdict(usage)),
            tokens_sent=0,
            updated_at_us=_now_us(),
        )
    )


def progress(database: Engine, request_id: str, tokens_sent: int) -> None:
    """Durably record the tokens a stream has sent: what is settled if its process dies."""
    with session_scope(database) as session:
        session.execute(
            update(RequestInFlight)
            .where(RequestInFlight.request_id == request_id)
            .values(tokens_sent=tokens_sent, updated_at_us=_now_us())
        )


def deliver(session: Session, usage: Usage) -> None:
    """Record that `usage`'s request was answered, with its final usage (tokens and citations),
    in the transaction that stores its answer: from then on it is settled in full, by this
    process's settler or, if it dies first, by recovery."""
    now = _now_us()
    session.execute(
        update(RequestInFlight)
        .where(RequestInFlight.request_id == usage.request_id)
        .values(
            usage_json=json.dumps(dataclasses.asdict(usage)),
            tokens_sent=usage.tokens_out,
            updated_at_us=now,
            delivered_at_us=now,
        )
    )


def lease_alive(session: Session, lease_id: str | None, *, now_us: int | None = None) -> bool:
    """Whether `lease_id` names a live process (no lease at all: not alive)."""
    if lease_id is None:
        return False
    lease = session.get(ServeLease, lease_id)
    return lease is not None and not _lapsed(lease, now_us or _now_us())


def lapsed_leases(session: Session, *, now_us: int | None = None) -> list[str]:
    """Leases past their expiry, or of processes of this host that have exited."""
    now_us = now_us or _now_us()
    leases = session.scalars(
        select(ServeLease).where(or_(ServeLease.expires_at_us < now_us, ServeLease.host == HOST))
    )
    return [lease.id for lease in leases if _lapsed(lease, now_us)]


def _lapsed(lease: ServeLease, now_us: int) -> bool:
    if lease.expires_at_us < now_us:
        return True
    if lease.host != HOST or lease.pid == os.getpid():
        return False
    try:
        os.kill(lease.pid, 0)  # signal 0: does the process exist?
    except ProcessLookupError:
        return True
    except OSError:  # exists, owned by someone else
        return False
    return False


def resolve(session: Session, request_id: str, *, fee_bps: int) -> str:
    """Settle what an orphaned request sent (void it when nothing was); its Idempotency-Key's
    attempt becomes failed. Returns what was done: settled, voided or nothing."""
    row = session.get(RequestInFlight, request_id)
    done = "nothing"
    if row is not None:
        usage = stored_usage(row)
        try:
            if row.tokens_sent > 0 or row.delivered_at_us is not None:
                settle(session, usage, fee_bps=fee_bps)
                done = "settled"
            elif reservation_state(session, request_id) == "open":
                void_reservation(session, request_id)
                done = "voided"
        except VizError as error:  # settled or voided meanwhile by its own process: leave it
            log.warning(json.dumps({"request_id": request_id, "recovery": error.message}))
        session.delete(row)
    session.execute(
        update(IdempotencyKey)
        .where(IdempotencyKey.request_id == request_id, IdempotencyKey.state == "running")
        .values(state="failed", lease_id=None, finished_at_us=_now_us())
    )
    return done


def recover(database: Engine, lease_id: str, *, fee_bps: int) -> dict[str, int]:
    """Resolve every request of lapsed lease `lease_id` (each in its own transaction), mark its
    running Idempotency-Keys failed and delete the lease. Returns counts per outcome."""
    counts: dict[str, int] = {}
    with session_scope(database) as session:
        requests = list(
            session.scalars(
                select(RequestInFlight.request_id).where(RequestInFlight.lease_id == lease_id)
            )
        )
    for request_id in requests:
        with session_scope(database) as session:
            done = resolve(session, request_id, fee_bps=fee_bps)
        counts[done] = counts.get(done, 0) + 1
    with session_scope(database) as session:
        keys = session.scalars(
            select(IdempotencyKey.request_id).where(
                IdempotencyKey.lease_id == lease_id, IdempotencyKey.state == "running"
            )
        ).all()
        for request_id in keys:  # free requests: nothing reserved, only the key to release
            resolve(session, request_id, fee_bps=fee_bps)
        session.execute(delete(ServeLease).where(ServeLease.id == lease_id))
    return counts


def stored_usage(row: RequestInFlight) -> Usage:
    """The usage to settle for `row`: as reserved (or delivered), with the tokens sent."""
    return _usage(json.loads(row.usage_json), row.tokens_sent)


def _usage(data: dict[str, Any], tokens_out: int) -> Usage:
    composition = tuple(AdapterUse(**use) for use in data.pop("composition"))
    citations = tuple(data.pop("citations"))
    data["tokens_out"] = tokens_out
    return Usage(**data, composition=composition, citations=citations)


class Keeper:
    """This process's lease, renewed by a daemon thread that also recovers other processes'
    lapsed leases, anchors the ledger's new transfers in the public log every
    VIZ_LEDGER_ANCHOR_INTERVAL_S (this process's requests defer it) and, every minute, trims
    old Idempotency-Key answers and rate windows."""

    def __init__(self, database: Engine, settings: Settings, *, janitor: Any = None) -> None:
        self.database, self.settings = database, settings
        self.lease_id = uuid.uuid4().hex
        self.janitor = janitor  # called with a session every JANITOR_EVERY_S
        self.recovered: dict[str, int] = {}
        self._stop = threading.Event()
        self.renew(taking=True)
        self.recover_lapsed()
        self._thread = threading.Thread(target=self._run, name="viz-lease", daemon=True)
        self._thread.start()

    def renew(self, *, taking: bool = False) -> None:
        """Push the lease's expiry a TTL ahead; take it (a new row) when there is none."""
        now = _now_us()
        expires = now + int(self.settings.lease_ttl_s * 1e6)
        with session_scope(self.database) as session:
            lease = session.get(ServeLease, self.lease_id)
            if lease is not None:
                lease.expires_at_us = expires
                return
            if not taking:  # another replica took us for dead (a stall over the TTL)
                log.warning(json.dumps({"lease": self.lease_id, "event": "lease lost; renewed"}))
            session.add(
                ServeLease(
                    id=self.lease_id,
                    host=HOST,
                    pid=os.getpid(),
                    started_at_us=now,
                    expires_at_us=expires,
                )
            )

    def recover_lapsed(self) -> None:
        with session_scope(self.database) as session:
            lapsed = lapsed_leases(session)
        for lease_id in lapsed:
            counts = recover(self.database, lease_id, fee_bps=self.settings.platform_fee_bps)
            for done, count in counts.items():
                self.recovered[done] = self.recovered.get(done, 0) + count
            log.info(json.dumps({"lease": lease_id, "event": "recovered", **counts}))

    def anchor(self) -> None:
        """Anchor the transfers written since the last anchor (any replica's). An idle ledger
        is only read: the write lock and a commit are taken only when there is a span."""
        with session_scope(self.database) as session:
            if not unanchored(session):
                return
        with session_scope(self.database) as session:
            anchor_ledger(session)

    def _run(self) -> None:
        janitor_at = renew_at = 0.0
        tick = min(self.settings.ledger_anchor_interval_s, self.settings.lease_ttl_s / 3)
        while not self._stop.wait(tick):
            try:
                self.anchor()
                if time.monotonic() >= renew_at:
                    renew_at = time.monotonic() + self.settings.lease_ttl_s / 3
                    self.renew()
                    self.recover_lapsed()
                if self.janitor is not None and time.monotonic() > janitor_at:
                    janitor_at = time.monotonic() + JANITOR_EVERY_S
                    with session_scope(self.database) as session:
                        self.janitor(session)
                        purge_windows(session)
            except Exception as error:  # noqa: BLE001 - a database hiccup: try again next round
                log.warning(json.dumps({"lease": self.lease_id, "renew_error": str(error)}))

    def close(self) -> None:
        """Stop renewing and delete the lease (its requests were finished or drained)."""
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            recover(self.database, self.lease_id, fee_bps=self.settings.platform_fee_bps)
            self.anchor()  # a clean stop leaves nothing unanchored
        except Exception as error:  # noqa: BLE001 - the next replica's keeper will do it
            log.warning(json.dumps({"lease": self.lease_id, "close_error": str(error)}))
