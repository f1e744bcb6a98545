"""Usage events: the stored record of each settled request, which makes settling idempotent.

One `usage_events` row per request id holds the usage in canonical JSON (`canonical_usage`) and
its settlement. Settling a request id again with the same usage returns the stored settlement
(`replay_settlement`); other usage under the same id is refused, naming the fields that changed.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from viz.errors import Conflict
from viz.ledger.book_rows import CHUNK, insert_many
from viz.ledger.usage import Line, Settlement, Usage, weight_of
from viz.store.schema import Account, UsageEvent

__all__ = ["canonical_usage", "record_events", "replay_settlement", "stored_events"]


def stored_events(session: Session, request_ids: list[str]) -> dict[str, tuple[str, Settlement]]:
    """The stored (canonical usage, settlement) of those request ids already settled."""
    found = {}
    unique = sorted(set(request_ids))
    for start in range(0, len(unique), CHUNK):
        rows = session.execute(
            select(UsageEvent.request_id, UsageEvent.input_json, UsageEvent.settlement_json).where(
                UsageEvent.request_id.in_(unique[start : start + CHUNK])
            )
        )
        for request_id, input_json, settlement_json in rows:
            found[request_id] = (input_json, _settlement_from_json(request_id, settlement_json))
    return found


def record_events(
    session: Session,
    fresh: list[tuple[Usage, str, Settlement]],
    now_us: int,
    consumer_ids: dict[str, int] | None = None,
) -> None:
    """Store one usage event per (usage, canonical usage, settlement) settled at `now_us`
    (`consumer_ids`: the consumers' account ids, when the caller has read them already)."""
    if consumer_ids is None:
        consumer_ids = dict(
            session.execute(
                select(Account.name, Account.id).where(
                    Account.name.in_(sorted({u.consumer for u, _, _ in fresh}))
                )
            ).all()
        )
    rows = [
        {
            "request_id": usage.request_id,
            "consumer_id": consumer_ids[usage.consumer],
            "base_id": usage.base,
            "tokens_in": usage.tokens_in,
            "tokens_out": usage.tokens_out,
            "charge": settlement.charge,
            "input_json": canonical,
            "settlement_json": _settlement_json(settlement),
            "occurred_at_us": usage.occurred_at_us or now_us,
            "settled_at_us": now_us,
        }
        for usage, canonical, settlement in fresh
    ]
    insert_many(session, "usage_events", rows)


def replay_settlement(
    usage: Usage, canonical: str, stored: str, settlement: Settlement
) -> Settlement:
    """The stored settlement of a retried request, marked `replayed`.

    Raises:
        Conflict: the retry's usage (`canonical`) differs from the stored one.
    """
    if canonical != stored:
        raise Conflict(
            f"request id {usage.request_id!r} was already settled with other usage "
            f"({_diff(json.loads(stored), json.loads(canonical))}); a retry must repeat it "
            "unchanged, a new request needs a new id"
        )
    return Settlement(
        settlement.request_id, settlement.charge, settlement.lines, settlement.reserved, True
    )


def canonical_usage(usage: Usage) -> str:
    """The usage as compact, sorted JSON: what a retry is compared by (not `occurred_at_us`)."""
    document: dict[str, Any] = {
        "request_id": usage.request_id,
        "consumer": usage.consumer,
        "base": usage.base,
        "tokens_in": usage.tokens_in,
        "tokens_out": usage.tokens_out,
        "composition": [
            [use.adapter, use.version, str(weight_of(use.weight))] for use in usage.composition
        ],
        "citations": list(usage.citations),
    }
    if usage.service_price:  # absent when 0: earlier events keep their canonical form
        document["service_price"] = usage.service_price
    return json.dumps(document, sort_keys=True, separators=(",", ":"))


def _settlement_json(settlement: Settlement) -> str:
    return json.dumps(
        {
            "charge": settlement.charge,
            "reserved": settlement.reserved,
            "lines": [_line_fields(line) for line in settlement.lines],
        },
        sort_keys=True,
        separators=(",", ":"),
    )


def _line_fields(line: Line) -> dict[str, Any]:
    return {
        "account": line.account,
        "amount": line.amount,
        "kind": line.kind,
        "adapter": line.adapter,
        "adapter_version_id": line.adapter_version_id,
        "document_id": line.document_id,
    }


def _settlement_from_json(request_id: str, text: str) -> Settlement:
    document = json.loads(text)
    lines = tuple(Line(**line) for line in document["lines"])
    return Settlement(request_id, document["charge"], lines, document["reserved"])


def _diff(stored: dict[str, Any], given: dict[str, Any]) -> str:
    changed = [key for key in sorted(given) if stored.get(key) != given.get(key)]
    return ", ".join(f"{key} was {stored.get(key)!r}, now {given.get(key)!r}" for key in changed)
