"""`Idempotency-Key`: a retry returns the first answer and is never charged twice.

A key maps to request id `idem-<account>-<sha256(key)[:32]>`; an attempt that failed before any
charge (its reservation voided or expired) lets the next one run as `<id>.1`, `<id>.2`, ... The
answers of the last REPLAYS_KEPT successful attempts are kept in memory to replay; the ledger
(`viz.ledger.requests`) says whether an id was charged or is still running.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Any

from sqlalchemy.orm import Session

from viz.errors import Conflict
from viz.ledger.requests import request_state
from viz.store.schema import Account

__all__ = ["ATTEMPTS_MAX", "REPLAYS_KEPT", "Replays", "attempt"]

ATTEMPTS_MAX = 20
REPLAYS_KEPT = 1000


class Replays:
    """The answers of successful attempts with a key, by request id, the newest REPLAYS_KEPT."""

    def __init__(self, kept: int = REPLAYS_KEPT) -> None:
        self.kept = kept
        self._answers: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, request_id: str) -> dict[str, Any] | None:
        with self._lock:
            return self._answers.get(request_id)

    def keep(self, request_id: str, answer: dict[str, Any]) -> None:
        with self._lock:
            self._answers[request_id] = answer
            while len(self._answers) > self.kept:
                self._answers.popitem(last=False)


def attempt(replays: Replays, session: Session, account: Account, key: str) -> str | dict[str, Any]:
    """The request id for this Idempotency-Key: the answer of an attempt that succeeded (a
    replay), or the next attempt's id when earlier ones failed before any charge.

    Raises:
        Conflict: an attempt with this key is still running, or its answer is no longer kept.
    """
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    base = f"idem-{account.id}-{digest}"
    for number in range(ATTEMPTS_MAX):
        request_id = base if number == 0 else f"{base}.{number}"
        answer = replays.get(request_id)
        if answer is not None:
            return answer
        state = request_state(session, request_id)
        if state == "charged":
            raise Conflict(
                "a request with this Idempotency-Key was already answered and charged; "
                "use a new key for a new request"
            )
        if state == "open":
            raise Conflict("a request with this Idempotency-Key is still running; retry later")
        if state is None:
            return request_id
    raise Conflict(f"{ATTEMPTS_MAX} attempts with this Idempotency-Key failed; use a new key")
