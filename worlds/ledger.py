"""A small market for ledger tests and benches: accounts, two approved adapters, a listed document.

Catalogue rows are written directly (the ledger reads prices, owners and status, never
weights), so ledger tests need no model; `tests/test_market.py` covers publishing for real.
"""

from __future__ import annotations

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from viz.accounts import create_account, get_account
from viz.models.registry import ensure_builtin_models
from viz.store import session_scope
from viz.store.schema import Adapter, AdapterVersion, Document, DocumentListing

BASE = "smollm2-135m-instruct"


def add_adapter(
    session: Session,
    name: str,
    owner: str,
    *,
    price_in: int,
    price_out: int,
    version: str = "1.0.0",
    status: str = "approved",
) -> AdapterVersion:
    adapter = Adapter(
        name=name, owner_id=get_account(session, owner).id, base_id=BASE, visibility="public"
    )
    session.add(adapter)
    session.flush()
    row = AdapterVersion(
        adapter_id=adapter.id,
        version=version,
        licence="CC-BY-4.0",
        price_in_micro=price_in,
        price_out_micro=price_out,
        status=status,
        weights_sha256="0" * 64,
        config_json="{}",
        rank=8,
        size_bytes=1,
        update_norm=1.0,
        sketch=b"",
        screening_json="{}",
    )
    session.add(row)
    session.flush()
    return row


def add_document(session: Session, owner: str, *, price_per_citation: int) -> int:
    document = Document(
        sha256=f"{owner}{price_per_citation}".ljust(64, "0")[:64],
        owner_id=get_account(session, owner).id,
        filename="paper.txt",
        title="A paper",
        media_type="text/plain",
        size_bytes=1,
        licence="CC-BY-4.0",
        ai_training="allowed",
        ai_inference="allowed",
    )
    session.add(document)
    session.flush()
    session.add(
        DocumentListing(document_id=document.id, price_per_citation_micro=price_per_citation)
    )
    session.flush()
    return document.id


def build_market(engine: Engine) -> int:
    """ada and carol create, bob and dan consume; returns carol's listed document id.

    qa@1.0.0 (ada): 100 in / 300 out micro-units per 1,000 tokens.
    mt@1.0.0 (carol): 50 in / 200 out. Carol's document: 500 per citation.
    """
    with session_scope(engine) as session:
        ensure_builtin_models(session)
        for name in ("ada", "bob", "carol", "dan"):
            create_account(session, name)
        add_adapter(session, "qa", "ada", price_in=100, price_out=300)
        add_adapter(session, "mt", "carol", price_in=50, price_out=200)
        return add_document(session, "carol", price_per_citation=500)
