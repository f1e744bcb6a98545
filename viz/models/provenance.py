"""A pretrained base's provenance, checked against the catalogue (issue 23).

A base Viz pretrains carries `viz-manifest.json` beside its weights: every document it saw (id,
sha256, licence, attribution, tokens per epoch, train or held-out), the tokenizer's corpus and
hash, the hyper-parameters, hardware, library versions and the weights' sha256. The registry
grants the class `open-licensed-only` only to a folder whose manifest verifies:

- the weights and the tokenizer hash to what the manifest says (nothing swapped after training);
- every document is in the catalogue with the same sha256 and licence, its bytes (when the blob
  store is given) still hash to it, its `ai_training` permission is `allowed`, it belongs to the
  manifest's creator, and its licence still admits pretraining (`viz.licences`);
- the base's licence is the one its documents' terms require (share-alike, non-commercial), and
  every attribution the licences ask for is in the manifest.

    report = verify_provenance(session, folder, blobs_dir=home / "blobs")
    report.ok, report.problems
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from viz.errors import InvalidInput
from viz.licences import base_licence, pretraining_terms
from viz.models._safetensors import folder_weights_sha256
from viz.store.blobs import blob_path, sha256_file
from viz.store.schema import BaseModel, Document

__all__ = [
    "MANIFEST_FILE",
    "MANIFEST_FORMAT",
    "MANIFEST_KIND",
    "Verification",
    "read_provenance",
    "verify_provenance",
]

MANIFEST_FILE = "viz-manifest.json"
MANIFEST_KIND = "pretrained-base"
MANIFEST_FORMAT = 1
MANIFEST_BYTES_MAX = 64 * 2**20


@dataclass(frozen=True)
class Verification:
    """What `verify_provenance` found: the manifest's claims and every problem with them."""

    folder: Path
    licence: str
    documents: int
    tokens: int
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def read_provenance(folder: Path) -> dict[str, Any]:
    """The pretraining manifest in `folder`.

    Raises:
        InvalidInput: no manifest, or one that is not a pretrained base's.
    """
    path = folder / MANIFEST_FILE
    if not path.is_file():
        raise InvalidInput(
            f"{folder} has no {MANIFEST_FILE}: only a base pretrained by Viz (viz models "
            "pretrain) carries a manifest that can prove it saw openly licensed text only; "
            "register other bases with --provenance web-crawl or unknown"
        )
    if path.stat().st_size > MANIFEST_BYTES_MAX:
        raise InvalidInput(f"{path} is larger than {MANIFEST_BYTES_MAX} bytes")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise InvalidInput(f"{path} is not valid JSON ({error})") from error
    if not isinstance(manifest, dict) or manifest.get("kind") != MANIFEST_KIND:
        raise InvalidInput(
            f"{path} is not a pretrained base's manifest (an adapter's, perhaps); "
            "an open-licensed-only base needs the manifest viz models pretrain writes"
        )
    if manifest.get("format") != MANIFEST_FORMAT:
        raise InvalidInput(
            f"{path} has manifest format {manifest.get('format')!r}; this Viz reads format "
            f"{MANIFEST_FORMAT}"
        )
    return manifest


def verify_provenance(
    session: Session,
    folder: Path,
    *,
    blobs_dir: Path | None = None,
    registered: BaseModel | None = None,
) -> Verification:
    """Check the manifest in `folder` against its files and the catalogue (see the module),
    and against the registry's record of the base when `registered` is given.

    Raises:
        InvalidInput: no readable manifest (`read_provenance`).
    """
    manifest = read_provenance(folder)
    problems = _check_files(folder, manifest)
    documents = manifest.get("documents") or []
    if not documents:
        problems.append("the manifest lists no documents")
    terms = []
    for entry in documents:
        found, document_terms = _check_document(session, entry, manifest, blobs_dir)
        problems.extend(found)
        if document_terms is not None:
            terms.append(document_terms)
    licence = str(manifest.get("licence", ""))
    if terms and len(terms) == len(documents):
        try:
            required = base_licence(terms, chosen=licence)
        except InvalidInput as error:
            problems.append(f"the base's licence {licence}: {error.message}")
        else:
            if required != licence:
                problems.append(f"the base's licence is {licence}; its documents need {required}")
    if registered is not None:
        if registered.weights_sha256 != manifest.get("weights_sha256"):
            problems.append(
                f"the registry recorded weights sha256 {registered.weights_sha256}, the manifest "
                f"says {manifest.get('weights_sha256')}"
            )
        if registered.licence != licence:
            problems.append(f"registered under {registered.licence}, the manifest says {licence}")
    missing = _missing_attributions(session, documents, manifest)
    if missing:
        problems.append("attributions missing from the card: " + "; ".join(missing))
    tokens = sum(int(entry.get("tokens", 0)) for entry in documents)
    return Verification(folder, licence, len(documents), tokens, tuple(problems))


def _check_files(folder: Path, manifest: dict[str, Any]) -> list[str]:
    problems = []
    try:
        weights = folder_weights_sha256(folder)
    except InvalidInput as error:
        return [error.message]
    if weights != manifest.get("weights_sha256"):
        problems.append(
            f"the weights hash to {weights}, the manifest says {manifest.get('weights_sha256')}: "
            "they were changed after pretraining"
        )
    tokenizer = manifest.get("tokenizer") or {}
    path = folder / "tokenizer.json"
    if not path.is_file():
        problems.append(f"{path} is missing")
    elif sha256_file(path) != tokenizer.get("sha256"):
        problems.append("tokenizer.json does not hash to the manifest's tokenizer sha256")
    trained_on = {e.get("id") for e in manifest.get("documents") or [] if e.get("split") == "train"}
    strangers = set(tokenizer.get("corpus") or []) - trained_on
    if strangers:
        problems.append(f"the tokenizer's corpus names untrained documents {sorted(strangers)}")
    return problems


def _check_document(
    session: Session, entry: dict[str, Any], manifest: dict[str, Any], blobs_dir: Path | None
) -> tuple[list[str], Any]:
    """The problems with one manifest document, and its pretraining terms (None if unusable)."""
    name = f"document {entry.get('id')}"
    document = _catalogued(session, entry)
    if document is None:
        return [f"{name} is not in this catalogue"], None
    problems = []
    if document.sha256 != entry.get("sha256"):
        problems.append(f"{name}: the catalogue's sha256 is {document.sha256}, not the manifest's")
    if blobs_dir is not None:
        blob = blob_path(blobs_dir, document.sha256)
        if not blob.is_file():
            problems.append(f"{name}: its bytes are missing from the blob store ({blob})")
        elif sha256_file(blob) != document.sha256:
            problems.append(f"{name}: its stored bytes no longer hash to {document.sha256}")
    if document.licence != entry.get("licence"):
        problems.append(
            f"{name}: catalogued under {document.licence}, the manifest says {entry.get('licence')}"
        )
    if document.ai_training != "allowed":
        problems.append(f"{name}: its ai_training permission is {document.ai_training}")
    if document.owner.name != manifest.get("creator"):
        problems.append(
            f"{name}: belongs to {document.owner.name}, not the base's creator "
            f"{manifest.get('creator')}"
        )
    terms = pretraining_terms(document.licence)
    if not terms.admitted:
        problems.append(f"{name}: {terms.reason}")
        return problems, None
    return problems, terms


def _missing_attributions(
    session: Session, documents: list[dict[str, Any]], manifest: dict[str, Any]
) -> list[str]:
    credited = set(manifest.get("attributions") or [])
    missing = []
    for entry in documents:
        document = _catalogued(session, entry)
        if document is None or not pretraining_terms(document.licence).attribution:
            continue
        expected = document.attribution or f"{document.title} ({document.licence})"
        if expected not in credited or entry.get("attribution") != expected:
            missing.append(f"document {document.id} ({document.title[:60]})")
    return missing


def _catalogued(session: Session, entry: dict[str, Any]) -> Document | None:
    document_id = entry.get("id")
    return session.get(Document, document_id) if isinstance(document_id, int) else None
