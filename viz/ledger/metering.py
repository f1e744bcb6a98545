"""Metering: one served request becomes one usage event, settled once into royalties.

    reserve(session, "req-1", "bob", amount=quote(session, usage_with_max_tokens, fee_bps=1000))
    ... serve the request ...
    settle(session, Usage("req-1", "bob", base, tokens_in=12, tokens_out=40,
                          composition=(AdapterUse("qa", "1.0.0", weight="0.7"),)), fee_bps=1000)

Settling is one linked group of transfers: the charge moves from the consumer into `clearing`
(by posting the request's reservation when there is one, for the actual amount, which may not
exceed what was reserved), then out of `clearing` to each adapter's creator, each cited
document's owner, the platform's fee, and to `escrow` for an adapter version taken down. An
approved version with royalty shares (`viz.ledger.shares`) pays several lines instead of one:
each contributor its share of the version's exact value, the owner the rest, all labelled with
the version (a taken-down version's whole value still goes to escrow as one line). The split
follows `viz.ledger.pricing`. A usage event is idempotent by request id: settling it again with
the same fields returns the first settlement; other fields are refused.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from viz.errors import Conflict, InvalidInput, NotFound, VizError
from viz.ledger.accounts import CLEARING, ESCROW, PLATFORM, consumer_code, creator_code
from viz.ledger.pricing import BPS, adapter_value, share_values, split
from viz.ledger.shares import shares_by_version
from viz.ledger.transfers import RESOLVED_AS, Book, Posted, Transfer, insert_many
from viz.store.schema import (
    Account,
    Adapter,
    AdapterVersion,
    Document,
    DocumentListing,
    LedgerPending,
    LedgerTransfer,
    UsageEvent,
)

__all__ = [
    "AdapterUse",
    "BatchOutcome",
    "Line",
    "Settlement",
    "Usage",
    "quote",
    "reservation_state",
    "reserve",
    "settle",
    "settle_batch",
    "void_reservation",
]

REQUEST_ID_MAX = 100
REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,100}")
TOKENS_MAX = 10_000_000
WEIGHT_MIN = Decimal("0.0001")
WEIGHT_MAX = Decimal(4)
COMPOSITION_MAX = 16
CITATIONS_MAX = 64
BATCH_MAX = 50_000


@dataclass(frozen=True)
class AdapterUse:
    """One adapter of a composition: `weight` scales both its LoRA delta and its royalty."""

    adapter: str
    version: str
    weight: str | float | int = 1


@dataclass(frozen=True)
class Usage:
    """What a served request used. `occurred_at_us` defaults to settlement time and is not
    compared on retries."""

    request_id: str
    consumer: str
    base: str
    tokens_in: int
    tokens_out: int
    composition: tuple[AdapterUse, ...] = ()
    citations: tuple[int, ...] = ()
    occurred_at_us: int | None = None


@dataclass(frozen=True)
class Line:
    """One share of a charge: who got it and what for."""

    account: str
    amount: int
    kind: str  # royalty | citation | escrow | fee
    adapter: str | None = None  # name@version
    adapter_version_id: int | None = None
    document_id: int | None = None


@dataclass(frozen=True)
class Settlement:
    request_id: str
    charge: int
    lines: tuple[Line, ...]
    reserved: int = 0
    replayed: bool = False


@dataclass
class BatchOutcome:
    settled: list[Settlement] = field(default_factory=list)
    refused: dict[str, VizError] = field(default_factory=dict)


@dataclass(frozen=True)
class _Priced:
    charge: int
    lines: tuple[Line, ...]


# --- reservations ---------------------------------------------------------------------------


def quote(session: Session, usage: Usage, *, fee_bps: int) -> int:
    """The charge `usage` would settle for: reserve it with `tokens_out` = max_tokens."""
    _check(usage)
    return _price(usage, _Catalogue.load(session, [usage]), fee_bps).charge


def reserve(
    session: Session,
    request_id: str,
    consumer: str,
    amount: int,
    *,
    timeout_s: int = 600,
    now_us: int | None = None,
) -> Posted:
    """Hold `amount` of `consumer`'s funds for request `request_id` until it settles.

    Raises:
        PaymentRequired: the balance (plus credit limit) cannot cover `amount`.
    """
    _check_request_id(request_id)
    book = Book(session, now=now_us)
    if session.scalar(select(UsageEvent.id).where(UsageEvent.request_id == request_id)):
        raise Conflict(f"request {request_id!r} was already settled; a new request needs a new id")
    book.expire_overdue()
    book.open_accounts({consumer_code(consumer), CLEARING})
    (posted,) = book.apply(
        [
            Transfer(
                id=f"reserve/{request_id}",
                debit=consumer_code(consumer),
                credit=CLEARING,
                amount=amount,
                kind="reserve",
                phase="pending",
                timeout_s=timeout_s,
                request_id=request_id,
            )
        ]
    )
    if posted.replayed and book.pending_state(posted.id) != "open":
        raise Conflict(
            f"request {request_id!r} was reserved before and that reservation is "
            f"{book.pending_state(posted.id)}; a new attempt needs a new request id"
        )
    book.finish()
    return posted


def reservation_state(session: Session, request_id: str) -> str | None:
    """Without locking: None (never reserved), `open`, `posted`, `voided` or `expired`."""
    row = session.execute(
        select(LedgerTransfer.seq, LedgerTransfer.expires_at_us).where(
            LedgerTransfer.transfer_id == f"reserve/{request_id}"
        )
    ).first()
    if row is None:
        return None
    if session.scalar(select(LedgerPending.seq).where(LedgerPending.seq == row[0])) is not None:
        return "open"
    phase = session.scalar(select(LedgerTransfer.phase).where(LedgerTransfer.pending_seq == row[0]))
    return RESOLVED_AS.get(str(phase), "expired")


def void_reservation(session: Session, request_id: str) -> Posted:
    """Release a request's reservation (it failed before any token was charged).

    Raises:
        NotFound: no reservation for `request_id`.
        Conflict: it was already settled, voided or expired.
    """
    book = Book(session)
    (posted,) = book.apply(
        [
            Transfer(
                id=f"void/{request_id}",
                kind="void",
                phase="void",
                pending_id=f"reserve/{request_id}",
                request_id=request_id,
            )
        ]
    )
    book.finish()
    return posted


# --- settlement -----------------------------------------------------------------------------


def settle(
    session: Session, usage: Usage, *, fee_bps: int, now_us: int | None = None
) -> Settlement:
    """Settle one usage event (see the module docstring).

    Raises:
        InvalidInput, NotFound: a malformed usage, an unknown consumer, adapter or document.
        PaymentRequired: the consumer cannot pay and there is no reservation.
        Conflict: the request id was settled with other fields, or its reservation is gone.
    """
    outcome = settle_batch(session, [usage], fee_bps=fee_bps, now_us=now_us)
    if outcome.refused:
        raise outcome.refused[usage.request_id]
    return outcome.settled[0]


def settle_batch(
    session: Session, usages: Sequence[Usage], *, fee_bps: int, now_us: int | None = None
) -> BatchOutcome:
    """Settle many usage events in one transaction; each is its own linked group, so one
    refused event (reported in `refused`) leaves the others settled."""
    if not 0 <= fee_bps <= BPS:
        raise InvalidInput(f"platform fee {fee_bps} must be 0..{BPS} basis points")
    if len(usages) > BATCH_MAX:
        raise InvalidInput(f"a batch holds at most {BATCH_MAX} usage events, got {len(usages)}")
    outcome = BatchOutcome()
    valid: list[Usage] = []
    for usage in usages:
        try:
            _check(usage)
            valid.append(usage)
        except VizError as error:
            outcome.refused[usage.request_id] = error
    book = Book(session, now=now_us)
    previous = _stored_events(session, [u.request_id for u in valid])
    book.prefetch([f"reserve/{u.request_id}" for u in valid if u.request_id not in previous])
    catalogue = _Catalogue.load(session, valid)
    fresh: list[tuple[Usage, str, Settlement]] = []
    seen: dict[str, tuple[str, Settlement]] = {}
    for usage in valid:
        canonical = _canonical(usage)
        earlier = previous.get(usage.request_id) or seen.get(usage.request_id)
        try:
            if earlier is not None:
                outcome.settled.append(_replay(usage, canonical, *earlier))
                continue
            priced = _price(usage, catalogue, fee_bps)
            codes = {consumer_code(usage.consumer), CLEARING} | {ln.account for ln in priced.lines}
            book.open_accounts(codes)
            reserved = _settle_one(book, usage, priced)
        except VizError as error:
            outcome.refused[usage.request_id] = error
            continue
        settlement = Settlement(usage.request_id, priced.charge, priced.lines, reserved)
        seen[usage.request_id] = (canonical, settlement)
        fresh.append((usage, canonical, settlement))
        outcome.settled.append(settlement)
    if fresh:
        _record_events(session, fresh, catalogue, book.now_us)
    book.finish(usage_events=len(fresh))
    return outcome


def _settle_one(book: Book, usage: Usage, priced: _Priced) -> int:
    """Stage one event's linked group; returns what its reservation held (0: none)."""
    request = usage.request_id
    reservation = book.find(f"reserve/{request}")
    transfers = []
    state = book.pending_state(reservation.id) if reservation is not None else None
    if reservation is not None and reservation.debit != consumer_code(usage.consumer):
        raise InvalidInput(
            f"request {request!r} was reserved by {reservation.debit}, not "
            f"{consumer_code(usage.consumer)}; usage is settled by who reserved"
        )
    if state == "voided":
        raise Conflict(
            f"the reservation of request {request!r} was voided (the request was declared "
            "failed); its usage cannot be settled"
        )
    if state in ("overdue", "expired"):
        # The request outlived its hold: release it (if not yet done) and charge directly,
        # so tokens served are never free; the balance check applies again.
        assert reservation is not None
        if state == "overdue":
            transfers.append(
                Transfer(
                    id=f"expire/{reservation.seq}",
                    kind="expire",
                    phase="expire",
                    pending_id=reservation.id,
                )
            )
        reservation = None
    if reservation is not None:
        phase = "post" if priced.charge else "void"
        transfers.append(
            Transfer(
                id=f"usage/{request}/charge",
                debit=consumer_code(usage.consumer),  # refused unless it is who reserved
                amount=priced.charge,
                kind="charge",
                phase=phase,
                pending_id=reservation.id,
                request_id=request,
            )
        )
    elif priced.charge:
        transfers.append(
            Transfer(
                id=f"usage/{request}/charge",
                debit=consumer_code(usage.consumer),
                credit=CLEARING,
                amount=priced.charge,
                kind="charge",
                request_id=request,
            )
        )
    book.mark_new(
        [t.id for t in transfers if t.id.startswith("usage/")]
        + [f"usage/{request}/{n}" for n in range(len(priced.lines))]
    )
    for number, line in enumerate(priced.lines):
        if line.amount:
            transfers.append(
                Transfer(
                    id=f"usage/{request}/{number}",
                    debit=CLEARING,
                    credit=line.account,
                    amount=line.amount,
                    kind=line.kind,
                    request_id=request,
                    adapter_version_id=line.adapter_version_id,
                    document_id=line.document_id,
                )
            )
    book.apply(transfers)
    return reservation.amount if reservation is not None else 0


# --- pricing against the catalogue ----------------------------------------------------------


@dataclass(frozen=True)
class _VersionPrice:
    id: int
    status: str
    price_in_micro: int
    price_out_micro: int
    owner: str
    base: str
    shares: tuple[tuple[str, int], ...] = ()  # (contributor, share_bps); the owner keeps the rest


@dataclass
class _Catalogue:
    """What pricing needs, loaded once per batch."""

    consumers: set[str]
    versions: dict[tuple[str, str], _VersionPrice]
    documents: dict[int, tuple[str, int]]  # -> owner name, price per citation

    @classmethod
    def load(cls, session: Session, usages: Sequence[Usage]) -> _Catalogue:
        names = sorted({u.consumer for u in usages})
        consumers = set(session.scalars(select(Account.name).where(Account.name.in_(names))))
        wanted = {(use.adapter, use.version) for u in usages for use in u.composition}
        versions = {}
        adapter_names = sorted({name for name, _ in wanted})
        if adapter_names:
            rows = session.execute(
                select(
                    AdapterVersion.id,
                    AdapterVersion.version,
                    AdapterVersion.status,
                    AdapterVersion.price_in_micro,
                    AdapterVersion.price_out_micro,
                    Adapter.name,
                    Account.name,
                    Adapter.base_id,
                )
                .join(Adapter, AdapterVersion.adapter_id == Adapter.id)
                .join(Account, Adapter.owner_id == Account.id)
                .where(Adapter.name.in_(adapter_names))
            )
            for id_, version, status, price_in, price_out, name, owner, base in rows:
                if (name, version) in wanted:
                    versions[(name, version)] = _VersionPrice(
                        id_, status, price_in, price_out, owner, base
                    )
            shares = shares_by_version(session, [v.id for v in versions.values()])
            for key, found in versions.items():
                if found.id in shares:
                    versions[key] = replace(found, shares=shares[found.id])
        document_ids = sorted({d for u in usages for d in u.citations})
        documents = {}
        if document_ids:
            listed = session.execute(
                select(Document.id, Account.name, DocumentListing.price_per_citation_micro)
                .join(Account, Document.owner_id == Account.id)
                .outerjoin(DocumentListing, DocumentListing.document_id == Document.id)
                .where(Document.id.in_(document_ids))
            )
            documents = {id_: (owner, price or 0) for id_, owner, price in listed}
        return cls(consumers, versions, documents)


def _price(usage: Usage, catalogue: _Catalogue, fee_bps: int) -> _Priced:
    if usage.consumer not in catalogue.consumers:
        raise NotFound(f"no account named {usage.consumer!r}; create it with: viz account create")
    values: list[Fraction] = []
    recipients: list[Line] = []
    for use in usage.composition:
        for value, line in _adapter_lines(usage, use, catalogue):
            values.append(value)
            recipients.append(line)
    for document_id in usage.citations:
        if document_id not in catalogue.documents:
            raise NotFound(f"no document {document_id} to cite")
        owner, price = catalogue.documents[document_id]
        values.append(Fraction(price))
        recipients.append(
            Line(account=creator_code(owner), amount=0, kind="citation", document_id=document_id)
        )
    charge, amounts, fee = split(values, fee_bps)
    lines = [replace(line, amount=amount) for line, amount in zip(recipients, amounts, strict=True)]
    lines.append(Line(account=PLATFORM, amount=fee, kind="fee"))
    return _Priced(charge, tuple(lines))


def _adapter_lines(
    usage: Usage, use: AdapterUse, catalogue: _Catalogue
) -> list[tuple[Fraction, Line]]:
    """The exact values one adapter of the composition earns, and who earns each: its owner,
    or escrow while it is taken down, or its owner and contributors when it has shares."""
    label = f"{use.adapter}@{use.version}"
    version = catalogue.versions.get((use.adapter, use.version))
    if version is None:
        raise NotFound(f"no adapter version {label} in the catalogue")
    if version.base != usage.base:
        raise InvalidInput(f"{label} adapts base {version.base!r}, not {usage.base!r}")
    if version.status not in ("approved", "taken_down"):
        raise InvalidInput(f"{label} is {version.status}; only approved adapters are served")
    value = adapter_value(
        _weight(use.weight),
        usage.tokens_in,
        usage.tokens_out,
        version.price_in_micro,
        version.price_out_micro,
    )
    line = Line(
        account=creator_code(version.owner),
        amount=0,
        kind="royalty",
        adapter=label,
        adapter_version_id=version.id,
    )
    if version.status == "taken_down":
        return [(value, replace(line, account=ESCROW, kind="escrow"))]
    if not version.shares:
        return [(value, line)]
    owner_value, parts = share_values(value, [bps for _, bps in version.shares])
    owner_bps = BPS - sum(bps for _, bps in version.shares)
    lines = [(owner_value, line)] if owner_bps else []
    for (contributor, _), part in zip(version.shares, parts, strict=True):
        lines.append((part, replace(line, account=creator_code(contributor))))
    return lines


# --- usage events ---------------------------------------------------------------------------


def _stored_events(session: Session, request_ids: list[str]) -> dict[str, tuple[str, Settlement]]:
    found = {}
    unique = sorted(set(request_ids))
    for start in range(0, len(unique), 500):
        rows = session.execute(
            select(UsageEvent.request_id, UsageEvent.input_json, UsageEvent.settlement_json).where(
                UsageEvent.request_id.in_(unique[start : start + 500])
            )
        )
        for request_id, input_json, settlement_json in rows:
            found[request_id] = (input_json, _settlement_from_json(request_id, settlement_json))
    return found


def _record_events(
    session: Session,
    fresh: list[tuple[Usage, str, Settlement]],
    catalogue: _Catalogue,
    now_us: int,
) -> None:
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


def _replay(usage: Usage, canonical: str, stored: str, settlement: Settlement) -> Settlement:
    if canonical != stored:
        raise Conflict(
            f"request id {usage.request_id!r} was already settled with other usage "
            f"({_diff(json.loads(stored), json.loads(canonical))}); a retry must repeat it "
            "unchanged, a new request needs a new id"
        )
    return Settlement(
        settlement.request_id, settlement.charge, settlement.lines, settlement.reserved, True
    )


def _canonical(usage: Usage) -> str:
    document: dict[str, Any] = {
        "request_id": usage.request_id,
        "consumer": usage.consumer,
        "base": usage.base,
        "tokens_in": usage.tokens_in,
        "tokens_out": usage.tokens_out,
        "composition": [
            [use.adapter, use.version, str(_weight(use.weight))] for use in usage.composition
        ],
        "citations": list(usage.citations),
    }
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


# --- checks ---------------------------------------------------------------------------------


def _check(usage: Usage) -> None:
    _check_request_id(usage.request_id)
    for label, tokens in (("tokens_in", usage.tokens_in), ("tokens_out", usage.tokens_out)):
        if isinstance(tokens, bool) or not isinstance(tokens, int) or not 0 <= tokens <= TOKENS_MAX:
            raise InvalidInput(f"{label} {tokens!r} must be an integer 0..{TOKENS_MAX}")
    if len(usage.composition) > COMPOSITION_MAX:
        raise InvalidInput(f"a composition holds at most {COMPOSITION_MAX} adapters")
    labels = [(use.adapter, use.version) for use in usage.composition]
    if len(set(labels)) != len(labels):
        raise InvalidInput("a composition names the same adapter version twice; add the weights")
    for use in usage.composition:
        _weight(use.weight)
    if len(usage.citations) > CITATIONS_MAX:
        raise InvalidInput(f"a request cites at most {CITATIONS_MAX} documents")
    if len(set(usage.citations)) != len(usage.citations):
        raise InvalidInput("list each cited document once: a citation is paid once per request")
    for document_id in usage.citations:
        if isinstance(document_id, bool) or not isinstance(document_id, int):
            raise InvalidInput(f"cited document {document_id!r} must be a document id")


def _check_request_id(request_id: str) -> None:
    if not isinstance(request_id, str) or not REQUEST_ID_PATTERN.fullmatch(request_id):
        raise InvalidInput(
            f"request id {request_id!r} must be 1..{REQUEST_ID_MAX} letters, digits and . _ : -"
        )


def _weight(weight: str | float | int) -> Fraction:
    if isinstance(weight, bool) or not isinstance(weight, str | float | int):
        raise InvalidInput(f"weight {weight!r} must be a number such as 0.7")
    return _parse_weight(weight)


@functools.lru_cache(maxsize=1024)
def _parse_weight(weight: str | float | int) -> Fraction:
    try:
        value = Decimal(str(weight))
    except (InvalidOperation, ValueError) as error:
        raise InvalidInput(f"weight {weight!r} must be a number such as 0.7") from error
    if not value.is_finite() or not WEIGHT_MIN <= abs(value) <= WEIGHT_MAX or value < 0:
        raise InvalidInput(f"weight {weight} must be between {WEIGHT_MIN} and {WEIGHT_MAX}")
    return Fraction(value)
