"""What many tests build on: the shared data folders, the tiny base, catalogued QASPER papers
and a plain PEFT adapter made outside Viz."""

from __future__ import annotations

import json
from pathlib import Path

from viz.documents import DocumentInput, add_documents
from viz.models import add_base_model

__all__ = [
    "QASPER_PAPERS",
    "REPO",
    "SHARED",
    "add_papers",
    "add_tiny_base",
    "make_tiny_adapter",
    "qasper_subset",
]

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
QASPER_PAPERS = SHARED / "data" / "qasper-dev" / "papers"


def add_tiny_base(session, folder: Path, model_id: str = "tiny"):  # type: ignore[no-untyped-def]
    """Register the tiny model in `folder` as base `model_id` (MIT, provenance unknown)."""
    return add_base_model(
        session, str(folder), model_id=model_id, licence="MIT", provenance_class="unknown"
    )


def qasper_subset(folder: Path, split: str, papers: int) -> Path:
    """A QASPER-format folder with the first `papers` papers (that have questions) of `split`."""
    source = SHARED / "data" / split
    questions = json.loads((source / "questions.json").read_text())
    chosen = sorted({q["paper_id"] for q in questions})[:papers]
    (folder / "papers").mkdir(parents=True, exist_ok=True)
    for paper in chosen:
        (folder / "papers" / f"{paper}.txt").write_text(
            (source / "papers" / f"{paper}.txt").read_text()
        )
    kept = [q for q in questions if q["paper_id"] in chosen]
    (folder / "questions.json").write_text(json.dumps(kept))
    return folder


def add_papers(session, blobs_dir: Path, owner, papers: list[str], **details) -> list[int]:  # type: ignore[no-untyped-def]
    """Catalogue QASPER dev papers for `owner` (CC-BY-4.0, Dasigi et al. 2021 unless `details`
    say otherwise); returns their document ids."""
    details = {"attribution": "Dasigi et al. 2021", **details}
    added, _ = add_documents(
        session,
        blobs_dir,
        owner,
        [QASPER_PAPERS / f"{p}.txt" for p in papers],
        DocumentInput("CC-BY-4.0", **details),
        document_bytes_max=10**7,
        documents_max=10,
    )
    return [d.id for d in added]


def make_tiny_adapter(base_folder: Path, folder: Path, *, seed: int, rank: int = 4) -> Path:
    """A plain PEFT LoRA adapter, made the way anyone would outside Viz."""
    import torch  # deferred: torch, peft, transformers are heavy
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_folder)
    model = get_peft_model(
        model, LoraConfig(r=rank, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    )
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.02)
    model.save_pretrained(folder)
    return folder
