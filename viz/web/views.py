"""What each marketplace page shows: plain queries that return plain data for the templates.

Every function takes an open session and the viewer (None when logged out) and returns only
what that viewer may see: private adapters to their owner, dashboards to their own account.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from viz.errors import NotFound
from viz.ledger.accounts import Balance, balance_of, consumer_code, creator_code
from viz.ledger.statements import Statement, statement
from viz.log.store import prove_entry, sign_checkpoint, verify_proof
from viz.market.catalogue import search_adapters
from viz.market.hierarchy import (
    USABLE,
    manifest_of,
    newest,
    newest_approved,
    visible_clause,
    visible_to,
    walk_parents,
)
from viz.routing.hierarchy import Node, adapter_tree, walk
from viz.store.schema import (
    Account,
    Adapter,
    AdapterTag,
    AdapterVersion,
    ApiKey,
    BaseModel,
    Document,
    DocumentListing,
    LedgerAccount,
    LedgerTransfer,
    LogEntry,
    Takedown,
    UsageEvent,
    VersionShare,
)

__all__ = [
    "AdapterPage",
    "CataloguePage",
    "CatalogueQuery",
    "ConsumerDashboard",
    "CreatorDashboard",
    "adapter_names",
    "adapter_page",
    "catalogue_page",
    "consumer_dashboard",
    "creator_dashboard",
    "document_page",
    "log_page",
    "takedowns_page",
]

CHART_DAYS = 30
USAGE_ROWS_MAX = 20_000  # a dashboard reads at most this many recent rows
SEARCH_CHARS_MAX = 200


# --- the catalogue --------------------------------------------------------------------------
@dataclass(frozen=True)
class CatalogueQuery:
    text: str = ""
    base: str = ""
    tag: str = ""
    licence: str = ""
    price_max: int | None = None  # micro-units per 1k output tokens
    domain: str = ""  # an adapter name: itself and its descendants


@dataclass(frozen=True)
class CatalogueRow:
    name: str
    version: str
    owner: str
    base: str
    parent: str | None
    tags: list[str]
    licence: str
    price_in: int
    price_out: int
    description: str


@dataclass(frozen=True)
class CataloguePage:
    query: CatalogueQuery
    rows: list[CatalogueRow]
    bases: list[str]
    tags: list[str]
    licences: list[str]
    tree: list[Node]  # the hierarchy of every base, as `viz routing tree` shows it


def catalogue_page(
    session: Session, query: CatalogueQuery, viewer: Account | None
) -> CataloguePage:
    """The newest usable version of each adapter the viewer may see that matches `query`."""
    found = search_adapters(
        session,
        text=query.text[:SEARCH_CHARS_MAX],
        tags=(query.tag,) if query.tag else (),
        base_id=query.base or None,
        licence=query.licence or None,
        price_out_max_micro=query.price_max,
        viewer=viewer,
        limit=500,
    )
    bases = list(session.scalars(select(BaseModel.id).order_by(BaseModel.id)))
    tree = [root for base in bases for root in adapter_tree(session, base, caller=viewer)]
    if query.domain:  # the domain's adapter and everything below it
        under = {n.name for node in walk(tree) if node.name == query.domain for n in walk([node])}
        found = [v for v in found if v.adapter.name in under]
    parents = _parents(session)
    rows = [
        CatalogueRow(
            name=v.adapter.name,
            version=v.version,
            owner=v.adapter.owner.name,
            base=v.adapter.base_id,
            parent=parents.get(v.adapter.name),
            tags=[t.tag for t in v.adapter.tags],
            licence=v.licence,
            price_in=v.price_in_micro,
            price_out=v.price_out_micro,
            description=v.adapter.description,
        )
        for v in found
    ]
    visible = visible_clause(viewer)
    return CataloguePage(
        query=query,
        rows=rows,
        bases=bases,
        tags=list(
            session.scalars(
                select(AdapterTag.tag)
                .join(Adapter, AdapterTag.adapter_id == Adapter.id)
                .where(visible)
                .distinct()
                .order_by(AdapterTag.tag)
            )
        ),
        licences=list(
            session.scalars(
                select(AdapterVersion.licence)
                .join(Adapter)
                .where(visible, AdapterVersion.status.in_(USABLE))
                .distinct()
                .order_by(AdapterVersion.licence)
            )
        ),
        tree=tree,
    )


def adapter_names(session: Session, viewer: Account | None) -> list[str]:
    """Names of the adapters the viewer may use, for the playground's suggestions."""
    return sorted(v.adapter.name for v in search_adapters(session, viewer=viewer, limit=500))


def _parents(session: Session) -> dict[str, str | None]:
    parent = Adapter.__table__.alias("parent")
    return {
        name: parent_name
        for name, parent_name in session.execute(
            select(Adapter.name, parent.c.name).outerjoin(parent, Adapter.parent_id == parent.c.id)
        )
    }


# --- one adapter ----------------------------------------------------------------------------
@dataclass(frozen=True)
class VersionRow:
    version: str
    status: str
    licence: str
    price_in: int
    price_out: int
    published_at: datetime


@dataclass(frozen=True)
class AdapterPage:
    name: str
    owner: str
    base: str
    description: str
    tags: list[str]
    chain: list[str]  # parent first ... this adapter last
    children: list[str]
    version: VersionRow
    versions: list[VersionRow]
    card: str
    screening: dict[str, Any]
    documents: list[dict[str, Any]]
    metrics: dict[str, Any]
    shares: list[tuple[str, int, str]]
    usage: list[tuple[date, float]]  # requests per day
    proof: dict[str, Any] | None
    proof_error: str


def adapter_page(
    session: Session, name: str, version: str, viewer: Account | None, log_key: Path
) -> AdapterPage:
    """An adapter's card, licence, provenance, screening, versions, chain, usage and proof.

    Raises:
        NotFound: no such adapter, a private one of someone else, or no such version.
    """
    adapter = session.scalar(select(Adapter).where(Adapter.name == name))
    if adapter is None or not visible_to(adapter, viewer):
        raise NotFound(f"no adapter named {name!r}; search the catalogue at /")
    versions = list(adapter.versions)
    if version:
        chosen = next((v for v in versions if v.version == version), None)
        if chosen is None:
            raise NotFound(f"{name} has no version {version!r}")
    else:
        chosen = newest_approved(adapter) or newest(versions)
        assert chosen is not None, "an adapter row always has a version"
    parents = _parents(session)
    manifest = manifest_of(chosen)
    proof, proof_error = _publish_proof(session, adapter.name, chosen.version, log_key)
    return AdapterPage(
        name=adapter.name,
        owner=adapter.owner.name,
        base=adapter.base_id,
        description=adapter.description,
        tags=[t.tag for t in adapter.tags],
        chain=[*reversed(walk_parents(adapter.name, parents.get, strict=False)), adapter.name],
        children=sorted(n for n, p in parents.items() if p == adapter.name),
        version=_version_row(chosen),
        versions=[_version_row(v) for v in reversed(versions)],
        card=chosen.card,
        screening=json.loads(chosen.screening_json or "{}"),
        documents=list(manifest.get("documents", [])),
        metrics=dict(manifest.get("metrics", {})),
        shares=[
            (account, bps, reason)
            for account, bps, reason in session.execute(
                select(Account.name, VersionShare.share_bps, VersionShare.reason)
                .join(VersionShare, VersionShare.account_id == Account.id)
                .where(VersionShare.adapter_version_id == chosen.id)
            )
        ],
        usage=_requests_per_day(session, [v.id for v in versions]),
        proof=proof,
        proof_error=proof_error,
    )


def _version_row(version: AdapterVersion) -> VersionRow:
    return VersionRow(
        version=version.version,
        status=version.status,
        licence=version.licence,
        price_in=version.price_in_micro,
        price_out=version.price_out_micro,
        published_at=version.published_at,
    )


def _publish_proof(
    session: Session, name: str, version: str, log_key: Path
) -> tuple[dict[str, Any] | None, str]:
    """The log entry that published `name@version`, its inclusion proof and a signed checkpoint,
    checked here as an auditor would (the page shows everything needed to check it again)."""
    needle_name = json.dumps(name)
    needle_version = json.dumps(version)
    candidates = session.scalars(
        select(LogEntry)
        .where(
            LogEntry.kind == "publish",
            LogEntry.data.contains(f'"adapter":{needle_name}'),
            LogEntry.data.contains(f'"version":{needle_version}'),
        )
        .order_by(LogEntry.index)
    ).all()
    if not candidates:
        return None, "no publish entry in the log for this version"
    proof = prove_entry(session, candidates[0].index, log_key)
    try:
        verify_proof(proof)
    except Exception as error:  # shown on the page: an auditor must see a failure
        return proof, f"the proof does not verify: {error}"
    return proof, ""


# --- one document ---------------------------------------------------------------------------
def document_page(session: Session, sha_or_id: str, viewer: Account | None) -> dict[str, Any]:
    """A document's provenance: owner, licence, attribution, permissions, listing, and the
    adapters whose published manifests name it.

    Raises:
        NotFound: no such document.
    """
    query = select(Document)
    if sha_or_id.isdigit():
        query = query.where(Document.id == int(sha_or_id))
    else:
        query = query.where(Document.sha256 == sha_or_id.lower())
    document = session.scalar(query)
    if document is None:
        raise NotFound(f"no document {sha_or_id!r}; documents are named by id or sha256")
    listing = session.scalar(
        select(DocumentListing).where(DocumentListing.document_id == document.id)
    )
    adapters = sorted(
        {
            f"{adapter.name}@{version.version}"
            for version, adapter in session.execute(
                select(AdapterVersion, Adapter)
                .join(Adapter)
                .where(
                    AdapterVersion.manifest_json.contains(document.sha256),
                    visible_clause(viewer),
                )
            )
        }
    )
    return {
        "id": document.id,
        "sha256": document.sha256,
        "title": document.title,
        "filename": document.filename,
        "owner": document.owner.name,
        "licence": document.licence,
        "attribution": document.attribution,
        "media_type": document.media_type,
        "size_bytes": document.size_bytes,
        "ai_training": document.ai_training,
        "ai_inference": document.ai_inference,
        "tags": [t.tag for t in document.tags],
        "added": document.created_at,
        "price_per_citation": listing.price_per_citation_micro if listing else None,
        "adapters": adapters,
    }


# --- dashboards -----------------------------------------------------------------------------
@dataclass(frozen=True)
class CreatorDashboard:
    statement: Statement | None
    adapters: list[tuple[str, str, str]]  # name, newest version, status
    earnings: dict[str, list[tuple[date, float]]]  # series name -> micro-units per day
    payouts: list[tuple[datetime, int, str, str]]  # when, amount, phase, memo


def creator_dashboard(session: Session, account: Account) -> CreatorDashboard:
    """What `account` earned, per adapter and per document, over time, and was paid out."""
    adapters = [
        (adapter.name, adapter.versions[-1].version, adapter.versions[-1].status)
        for adapter in session.scalars(
            select(Adapter).where(Adapter.owner_id == account.id).order_by(Adapter.name)
        )
        if adapter.versions
    ]
    ledger = session.scalar(
        select(LedgerAccount).where(LedgerAccount.code == creator_code(account.name))
    )
    if ledger is None:
        return CreatorDashboard(None, adapters, {}, [])
    rows = session.execute(
        select(
            LedgerTransfer.timestamp_us,
            LedgerTransfer.amount,
            Adapter.name,
            Document.title,
        )
        .outerjoin(AdapterVersion, LedgerTransfer.adapter_version_id == AdapterVersion.id)
        .outerjoin(Adapter, AdapterVersion.adapter_id == Adapter.id)
        .outerjoin(Document, LedgerTransfer.document_id == Document.id)
        .where(
            LedgerTransfer.credit_id == ledger.id,
            LedgerTransfer.phase == "single",
            LedgerTransfer.kind.in_(("royalty", "release", "citation")),
            LedgerTransfer.timestamp_us >= _since_us(),
        )
        .order_by(LedgerTransfer.seq.desc())
        .limit(USAGE_ROWS_MAX)
    )
    per_series: dict[str, dict[date, float]] = defaultdict(lambda: defaultdict(float))
    for timestamp_us, amount, adapter_name, title in rows:
        label = adapter_name or f"document: {(title or '')[:40]}"
        per_series[label][_day(timestamp_us)] += amount
    payouts = [
        (_when(t.timestamp_us), t.amount, t.phase, t.memo)
        for t in session.scalars(
            select(LedgerTransfer)
            .where(LedgerTransfer.debit_id == ledger.id, LedgerTransfer.kind == "payout")
            .order_by(LedgerTransfer.seq.desc())
            .limit(100)
        )
    ]
    return CreatorDashboard(
        statement=statement(session, account.name),
        adapters=adapters,
        earnings={k: _fill(v) for k, v in sorted(per_series.items())},
        payouts=payouts,
    )


@dataclass(frozen=True)
class ConsumerDashboard:
    balance: Balance | None
    keys: list[ApiKey]
    per_adapter: list[tuple[str, int, int, int]]  # adapter, requests, tokens, micro-units paid
    spending: list[tuple[date, float]]  # micro-units per day
    recent: list[dict[str, Any]]


def consumer_dashboard(session: Session, account: Account) -> ConsumerDashboard:
    """`account`'s balance, API keys, and usage per adapter and over time."""
    ledger = session.scalar(
        select(LedgerAccount).where(LedgerAccount.code == consumer_code(account.name))
    )
    events = session.scalars(
        select(UsageEvent)
        .where(UsageEvent.consumer_id == account.id, UsageEvent.occurred_at_us >= _since_us())
        .order_by(UsageEvent.id.desc())
        .limit(USAGE_ROWS_MAX)
    ).all()
    per_adapter: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    per_day: dict[date, float] = defaultdict(float)
    for event in events:
        per_day[_day(event.occurred_at_us)] += event.charge
        lines = json.loads(event.settlement_json)["lines"]
        adapters = {line["adapter"] for line in lines if line["adapter"]} or {event.base_id}
        for adapter in adapters:
            figures = per_adapter[adapter]
            figures[0] += 1
            figures[1] += event.tokens_in + event.tokens_out
            figures[2] += sum(line["amount"] for line in lines if line["adapter"] == adapter)
    recent = [
        {
            "when": _when(event.occurred_at_us),
            "request_id": event.request_id,
            "model": ", ".join(
                f"{name}@{version}"
                for name, version, _ in json.loads(event.input_json)["composition"]
            )
            or event.base_id,
            "tokens_in": event.tokens_in,
            "tokens_out": event.tokens_out,
            "charge": event.charge,
        }
        for event in events[:20]
    ]
    return ConsumerDashboard(
        balance=balance_of(ledger) if ledger is not None else None,
        keys=list(
            session.scalars(
                select(ApiKey)
                .where(ApiKey.account_id == account.id)
                .order_by(ApiKey.created_at.desc())
            )
        ),
        per_adapter=sorted(
            ((name, *figures) for name, figures in per_adapter.items()),  # type: ignore[misc]
            key=lambda row: (-row[1], row[0]),
        ),
        spending=_fill(per_day),
        recent=recent,
    )


# --- the log and takedowns ------------------------------------------------------------------
def log_page(session: Session, log_key: Path, index: int | None) -> dict[str, Any]:
    """The latest signed checkpoint, the newest entries, and (if asked) one entry's inclusion
    proof checked against that checkpoint.

    Raises:
        NotFound: `index` is not in the log.
    """
    checkpoint = sign_checkpoint(session, log_key)
    entries = session.scalars(select(LogEntry).order_by(LogEntry.index.desc()).limit(20)).all()
    checked: dict[str, Any] | None = None
    if index is not None:
        proof = prove_entry(session, index, log_key)
        try:
            verify_proof(proof)
            verdict = "verified"
        except Exception as error:  # shown to the auditor, never hidden
            verdict = f"does not verify: {error}"
        checked = {**proof, "verdict": verdict}
    return {
        "checkpoint": checkpoint,
        "entries": [(e.index, e.kind, e.created_at, e.data) for e in entries],
        "checked": checked,
    }


def takedowns_page(session: Session) -> list[dict[str, Any]]:
    rows = session.execute(
        select(Takedown, AdapterVersion, Adapter, Account.name)
        .join(AdapterVersion, Takedown.version_id == AdapterVersion.id)
        .join(Adapter, AdapterVersion.adapter_id == Adapter.id)
        .join(Account, Takedown.by_account_id == Account.id)
        .order_by(Takedown.id.desc())
        .limit(500)
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


# --- days -----------------------------------------------------------------------------------
def _since_us() -> int:
    since = datetime.now(UTC) - timedelta(days=CHART_DAYS - 1)
    return int(since.replace(hour=0, minute=0, second=0, microsecond=0).timestamp() * 1e6)


def _when(timestamp_us: int) -> datetime:
    return datetime.fromtimestamp(timestamp_us / 1e6, UTC)


def _day(timestamp_us: int) -> date:
    return _when(timestamp_us).date()


def _requests_per_day(session: Session, version_ids: list[int]) -> list[tuple[date, float]]:
    """Requests that paid these versions (one royalty line each), per day."""
    per_day: dict[date, float] = defaultdict(float)
    seen: set[str | None] = set()  # a version with royalty shares pays several lines a request
    for request_id, timestamp_us in session.execute(
        select(LedgerTransfer.request_id, LedgerTransfer.timestamp_us)
        .where(
            LedgerTransfer.adapter_version_id.in_(version_ids),
            LedgerTransfer.kind == "royalty",
            LedgerTransfer.phase == "single",
            LedgerTransfer.timestamp_us >= _since_us(),
        )
        .order_by(LedgerTransfer.seq.desc())
        .limit(USAGE_ROWS_MAX)
    ):
        if request_id not in seen:
            seen.add(request_id)
            per_day[_day(timestamp_us)] += 1
    return _fill(per_day)


def _fill(per_day: dict[date, float]) -> list[tuple[date, float]]:
    """The last CHART_DAYS days in order, zero where nothing happened."""
    today = datetime.now(UTC).date()
    days = [today - timedelta(days=n) for n in range(CHART_DAYS - 1, -1, -1)]
    return [(day, per_day.get(day, 0.0)) for day in days]
