"""One adapter's page: card, licence, provenance, screening, versions, chain, royalty
shares, requests per day and the log's proof that the version was published."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from viz.errors import NotFound
from viz.ledger.statements import requests_per_day
from viz.log.store import prove_entry, verify_proof
from viz.market.hierarchy import manifest_of, newest, newest_approved, visible_to
from viz.store.schema import Account, Adapter, AdapterVersion, BaseModel, LogEntry, VersionShare
from viz.web.views._days import USAGE_ROWS_MAX, fill, since_us
from viz.web.views.catalogue import lineage, parents_by_name

__all__ = ["AdapterPage", "VersionRow", "adapter_page"]


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
    base_provenance: str  # of the base's pretraining data: open-licensed-only (verified), ...
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
    parents = parents_by_name(session)
    manifest = manifest_of(chosen)
    proof, proof_error = _publish_proof(session, adapter.name, chosen.version, log_key)
    return AdapterPage(
        name=adapter.name,
        owner=adapter.owner.name,
        base=adapter.base_id,
        base_provenance=_provenance(session, adapter.base_id),
        description=adapter.description,
        tags=[t.tag for t in adapter.tags],
        chain=list(reversed(lineage(adapter.name, parents))),
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
        usage=fill(
            requests_per_day(
                session,
                [v.id for v in versions],
                since_us=since_us(),
                rows_max=USAGE_ROWS_MAX,
            )
        ),
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


def _provenance(session: Session, base_id: str) -> str:
    base = session.get(BaseModel, base_id)
    return base.provenance_class if base is not None else "unknown"
