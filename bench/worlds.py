"""The markets the benches run on (bench's own, so that no bench imports the tests).

- `build_market`: accounts, two approved adapters and a listed document, catalogue rows written
  directly (the ledger reads prices, owners and status, never weights): `bench/ledger.py`;
- `make_adapter` and `register`: real LoRA adapters for the default model (random, non-zero A
  and B) stored as blobs and catalogue rows, as publishing does: `bench/serving.py`.

They are copies of `tests/worlds/ledger.py` and of `make_adapter` / `register` in
`tests/worlds/serving.py`: change both together.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from viz.accounts import create_account, get_account
from viz.models.loading import load_folder
from viz.models.registry import ensure_builtin_models
from viz.store import session_scope
from viz.store.blobs import put_blob
from viz.store.schema import Adapter, AdapterVersion, Document, DocumentListing

__all__ = ["BASE", "add_adapter", "add_document", "build_market", "make_adapter", "register"]

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


def make_adapter(base_folder: Path, folder: Path, *, seed: int, rank: int = 8) -> Path:
    """A PEFT LoRA on every linear layer of the base in `base_folder`, saved to `folder`."""
    import torch  # deferred: torch, peft are heavy
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    base = load_folder(base_folder, "fp32")
    config = LoraConfig(
        r=rank, lora_alpha=2 * rank, target_modules="all-linear", init_lora_weights=False
    )
    model = get_peft_model(base, config)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.mul_(0.3)  # a clear but not destructive change to the output
    model.save_pretrained(folder)
    return folder


def register(
    session: Session,
    blobs_dir: Path,
    folder: Path,
    name: str,
    owner: str,
    *,
    price_in: int = 100,
    price_out: int = 300,
    status: str = "approved",
    visibility: str = "public",
) -> int:
    """Put `folder`'s adapter in the catalogue (weights as a blob); returns the version id."""
    weights, _ = put_blob(blobs_dir, (folder / "adapter_model.safetensors").read_bytes())
    version = add_adapter(
        session, name, owner, price_in=price_in, price_out=price_out, status=status
    )
    version.weights_sha256 = weights
    version.config_json = (folder / "adapter_config.json").read_text()
    version.adapter.visibility = visibility
    session.flush()
    return version.id
