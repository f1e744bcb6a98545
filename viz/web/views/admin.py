"""The administrators' pages: takedowns and restores, newest first."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from viz.store.schema import Account, Adapter, AdapterVersion, Takedown

__all__ = ["TAKEDOWNS_SHOWN_MAX", "takedowns_page"]

TAKEDOWNS_SHOWN_MAX = 500


def takedowns_page(session: Session) -> list[dict[str, Any]]:
    """Every takedown (the newest TAKEDOWNS_SHOWN_MAX): what, why, by whom, and any restore."""
    rows = session.execute(
        select(Takedown, AdapterVersion, Adapter, Account.name)
        .join(AdapterVersion, Takedown.version_id == AdapterVersion.id)
        .join(Adapter, AdapterVersion.adapter_id == Adapter.id)
        .join(Account, Takedown.by_account_id == Account.id)
        .order_by(Takedown.id.desc())
        .limit(TAKEDOWNS_SHOWN_MAX)
    )
    return [
        {
            "id": takedown.id,
            "adapter": f"{adapter.name}@{version.version}",
            "status": version.status,
            "reason": takedown.reason,
            "notice_from": takedown.notice_from,
            "by": by,
            "created_at": takedown.created_at,
            "restored_at": takedown.restored_at,
            "restore_reason": takedown.restore_reason,
        }
        for takedown, version, adapter, by in rows
    ]
