"""What the ledger knows of one metered request, for callers that must not read its tables.

    request_state(session, "idem-7-ab12...")   # None, "charged", "open", "voided", "expired"

The gateway's idempotency (`viz.serving.idempotency`) asks this before reusing a request id.
"""

from __future__ import annotations

from typing import Literal, cast

from sqlalchemy import select
from sqlalchemy.orm import Session

from viz.ledger.reservations import reservation_state
from viz.store.schema import UsageEvent

__all__ = ["RequestState", "request_state"]

RequestState = Literal["charged", "open", "posted", "voided", "expired"]


def request_state(session: Session, request_id: str) -> RequestState | None:
    """Without locking: None (the ledger never saw it), `charged` (a usage event was recorded),
    else its reservation's state: `open` (held, running), `posted`, `voided` or `expired`."""
    if session.scalar(select(UsageEvent.id).where(UsageEvent.request_id == request_id)):
        return "charged"
    return cast(RequestState | None, reservation_state(session, request_id))
