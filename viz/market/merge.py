"""Upstream merge: a parent adapter's new version built from its children, gated by contribution.

    plan = merge_children(session, blobs_dir, models_dir, adapters_dir, MergeRequest(
        parent="nlp-research", version="1.1.0", validation=windows), owner=ai2)

Knowledge flows up the hierarchy: the approved children of a parent (its sub-domain adapters)
are merged into the parent's next version with PEFT's `add_weighted_adapter` (TIES on the full
weight deltas, then an SVD back to LoRA factors: `ties_svd`). Not every child deserves a place:

1. screening   only the newest version of each child that screening approved is a candidate; a
               flagged one (a near-copy of another creator's adapter, a trigger that moves the
               output: `viz.market.screening`) waits as pending and is left out, and says why;
2. contribution  each candidate's marginal effect on the parent owner's validation windows:
               mean next-token loss of the parent merged with an empty adapter minus that of
               the parent merged with the child, both the way the final merge is made (TIES
               trims the parent as well, so the parent alone is not the baseline). A
               child that raises the loss (poisoned: trained on corrupted text) or lowers it by
               less than `min_contribution` (free-riding: an untrained or random adapter) is
               left out, and the reason is recorded in the public log.

The merged version is published through the same screening as any upload, and its future
royalties are shared: each contributing child's creator gets the child's share of the measured
contribution, contribution_i / (the parent's own contribution + the sum over included children),
in basis points (`viz.ledger.shares`); the owner keeps the rest, own children included.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from viz.accounts import get_account
from viz.errors import Forbidden, InvalidInput
from viz.ledger.pricing import BPS
from viz.ledger.shares import set_version_shares
from viz.log.store import append_entry
from viz.market.catalogue import PublishRequest, get_adapter, publish_adapter
from viz.market.hierarchy import (
    manifest_of,
    manifest_precision,
    newest,
    newest_approved,
    visible_to,
)
from viz.market.screening import ScreeningReport
from viz.models.loading import ensure_cached, load_folder
from viz.models.registry import get_base_model
from viz.store.blobs import read_blob
from viz.store.schema import Account, Adapter, AdapterVersion
from viz.training.evaluate import perplexity
from viz.training.manifest import MANIFEST_FILE, hardware, library_versions

__all__ = [
    "COMBINATIONS",
    "Candidate",
    "MergeOutcome",
    "MergeRequest",
    "merge_children",
    "measure_and_merge",
]

COMBINATIONS = ("ties_svd", "dare_ties_svd", "svd")
MIN_CONTRIBUTION = 0.002  # nats per token: 0.2% lower perplexity
CHILDREN_MAX = 16
VALIDATION_WINDOWS_MAX = 256
MERGED_RANK_MAX = 64
NOTHING = "(nothing)"


@dataclass(frozen=True)
class MergeRequest:
    parent: str
    version: str
    validation: Sequence[tuple[int, ...]]
    combination: str = "ties_svd"
    density: float = 0.5
    min_contribution: float = MIN_CONTRIBUTION
    dry_run: bool = False
    gate: bool = True  # False: merge every approved child, whatever it contributes (to compare)


@dataclass
class Candidate:
    """One child adapter and what the gate decided about it."""

    label: str
    creator: str
    status: str
    contribution: float | None = None  # nats per token; None when it was not measured
    included: bool = False
    reason: str = ""
    caught_by: str = ""  # screening | contribution | "" (included)


@dataclass
class MergeOutcome:
    parent: str  # name@version merged from
    candidates: list[Candidate]
    loss: dict[str, float] = field(default_factory=dict)  # base, parent, merged, ungated
    shares: list[tuple[str, int, str]] = field(default_factory=list)
    folder: Path | None = None
    version: AdapterVersion | None = None
    report: ScreeningReport | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "parent": self.parent,
            "candidates": [asdict(c) for c in self.candidates],
            "loss_nats_per_token": self.loss,
            "shares": [{"account": a, "share_bps": b, "reason": r} for a, b, r in self.shares],
        }


def merge_children(
    session: Session,
    blobs_dir: Path,
    models_dir: Path,
    adapters_dir: Path,
    request: MergeRequest,
    *,
    owner: Account,
) -> MergeOutcome:
    """Gate the children of `request.parent`, merge the contributors into a new parent version,
    publish it with royalty shares and log every decision (unless `dry_run`).

    Raises:
        Forbidden: the parent belongs to another creator.
        InvalidInput: bad settings, no validation windows, no approved parent version, no child
            that contributes (the message lists each child and why it was left out).
    """
    _check(request)
    parent, parent_version, children = _merge_target(session, request.parent, owner)
    candidates, usable = _screened(children, owner)
    base = get_base_model(session, parent.base_id)
    base_folder = ensure_cached(base, models_dir)
    label = f"{parent.name}@{parent_version.version}"
    out = adapters_dir / f"{parent.name}-merged-{request.version}"
    with tempfile.TemporaryDirectory(prefix="viz-merge-") as scratch:
        folders = {
            lab: materialise_version(blobs_dir, version, Path(scratch) / f"c{i}")
            for i, (lab, version) in enumerate([(label, parent_version), *usable.items()])
        }
        outcome = measure_and_merge(
            base_folder,
            folders,
            label,
            candidates,
            request,
            out=None if request.dry_run else out,
            manifest=_merged_manifest(base, owner, parent_version, usable, request),
        )
    if request.dry_run:
        return outcome
    if not any(c.included for c in candidates):
        shutil.rmtree(out, ignore_errors=True)
        raise InvalidInput(
            f"no child of {parent.name} contributes, nothing merged: "
            + "; ".join(f"{c.label}: {c.reason}" for c in candidates)
        )
    outcome.version, outcome.report = publish_adapter(
        session,
        blobs_dir,
        models_dir,
        out,
        PublishRequest(
            name=parent.name,
            version=request.version,
            licence=parent_version.licence,
            price_in_micro=parent_version.price_in_micro,
            price_out_micro=parent_version.price_out_micro,
            base_id=base.id,
            tags=tuple(t.tag for t in parent.tags),
            visibility=parent.visibility,
            description=parent.description,
        ),
        owner=owner,
    )
    _record(session, outcome, request, parent.name, label, owner.name)
    outcome.folder = out
    return outcome


def measure_and_merge(
    base_folder: Path,
    folders: dict[str, Path],
    parent_label: str,
    candidates: list[Candidate],
    request: MergeRequest,
    *,
    out: Path | None,
    manifest: dict[str, Any] | None = None,
) -> MergeOutcome:
    """Measure each usable child's contribution over the parent, decide, and merge.

    `folders` maps labels to PEFT folders, the parent's first. Candidates whose label has no
    folder were already left out (by screening). With `out`, the merged adapter is written
    there as a PEFT folder (safetensors), with `manifest` as its viz-manifest.json.
    """
    # deferred: torch and peft are heavy
    import torch
    from peft import PeftModel

    names = {label: f"a{i}" for i, label in enumerate(folders)}
    model: Any = PeftModel.from_pretrained(
        load_folder(base_folder, "fp32"), folders[parent_label], adapter_name=names[parent_label]
    )
    for label, folder in folders.items():
        if label != parent_label:
            model.load_adapter(folder, adapter_name=names[label])
    model.eval()
    windows = request.validation
    with model.disable_adapter():
        loss = {"base": _loss(model, windows)}
    model.base_model.set_adapter(names[parent_label])
    loss["parent"] = _loss(model, windows)
    # The baseline is the parent as the merge sees it (TIES trims it too): the parent merged
    # with an adapter that changes nothing.
    names[NOTHING] = "nothing"
    model.load_adapter(folders[parent_label], adapter_name="nothing")
    with torch.no_grad():
        for module in model.modules():
            if "nothing" in getattr(module, "lora_B", {}):
                module.lora_B["nothing"].weight.zero_()
    loss["parent_as_merged"] = _merge(model, names, [parent_label, NOTHING], request, "baseline")
    model.delete_adapter("baseline")
    for candidate in candidates:
        if candidate.label not in folders:
            continue
        trial = f"trial-{names[candidate.label]}"
        candidate.contribution = loss["parent_as_merged"] - _merge(
            model, names, [parent_label, candidate.label], request, trial
        )
        model.delete_adapter(trial)
        _decide(candidate, candidate.contribution, request)
    included = [c.label for c in candidates if c.included]
    measured = [c.label for c in candidates if c.contribution is not None]
    outcome = MergeOutcome(parent_label, candidates, loss)
    if included:
        loss["merged"] = _merge(model, names, [parent_label, *included], request, "merged")
        if set(measured) != set(included):
            loss["ungated"] = _merge(model, names, [parent_label, *measured], request, "ungated")
        if out is not None:
            _save(model, "merged", out, manifest or {})
    return outcome


def _merge_target(
    session: Session, name: str, owner: Account
) -> tuple[Adapter, AdapterVersion, Sequence[Adapter]]:
    """The parent `owner` merges into (Forbidden if not theirs), its newest approved version
    and its children (InvalidInput if none, or too many)."""
    parent = get_adapter(session, name)
    if parent.owner_id != owner.id:
        raise Forbidden(
            f"{parent.name!r} belongs to {parent.owner.name}; only its creator merges into it"
        )
    parent_version = newest_approved(parent)
    if parent_version is None:
        raise InvalidInput(f"{parent.name} has no approved version to merge into")
    children = session.scalars(
        select(Adapter).where(Adapter.parent_id == parent.id).order_by(Adapter.name)
    ).all()
    if not children:
        raise InvalidInput(
            f"{parent.name} has no children; publish sub-domain adapters with --parent "
            f"{parent.name} first"
        )
    if len(children) > CHILDREN_MAX:
        raise InvalidInput(f"{parent.name} has {len(children)} children; at most {CHILDREN_MAX}")
    return parent, parent_version, children


def _screened(
    children: Sequence[Adapter], owner: Account
) -> tuple[list[Candidate], dict[str, AdapterVersion]]:
    """Every child's newest version as a candidate, and the usable ones by label."""
    candidates, usable = [], {}
    for child in children:
        latest = newest(child.versions)
        assert latest is not None, "an adapter row always has a version"
        candidate = Candidate(f"{child.name}@{latest.version}", child.owner.name, latest.status)
        if not visible_to(child, owner):
            candidate.reason, candidate.caught_by = "private to its creator", "visibility"
        elif latest.status != "approved":
            candidate.reason = f"{latest.status}: " + _screening_summary(latest)
            candidate.caught_by = "screening"
        else:
            usable[candidate.label] = latest
        candidates.append(candidate)
    return candidates, usable


def _record(
    session: Session,
    outcome: MergeOutcome,
    request: MergeRequest,
    parent: str,
    label: str,
    owner: str,
) -> None:
    """Set the published version's royalty shares and log the merge with every decision."""
    assert outcome.version is not None
    outcome.shares = _shares(outcome, owner)
    if outcome.shares:
        set_version_shares(
            session,
            outcome.version,
            [(get_account(session, name), bps, why) for name, bps, why in outcome.shares],
        )
    append_entry(
        session,
        "merge",
        {
            "adapter": parent,
            "version": request.version,
            "from": label,
            "combination": request.combination,
            "density": request.density,
            "min_contribution": request.min_contribution,
            "validation_windows": len(request.validation),
            **outcome.as_dict(),
        },
    )


def _decide(candidate: Candidate, contribution: float, request: MergeRequest) -> None:
    """The gate: include a candidate whose contribution is at least `min_contribution`."""
    if not request.gate:
        candidate.included = True
        candidate.reason = f"merged without a gate ({contribution:+.4f} nats/token)"
    elif contribution < 0:
        candidate.caught_by = "contribution"
        candidate.reason = (
            f"hurts: merged with the parent, it raises the validation loss by "
            f"{-contribution:.4f} nats/token (poisoned or off-domain)"
        )
    elif contribution < request.min_contribution:
        candidate.caught_by = "contribution"
        candidate.reason = (
            f"adds nothing: lowers the validation loss by {contribution:.4f} "
            f"nats/token, under the {request.min_contribution} needed (free-riding or "
            "untrained)"
        )
    else:
        candidate.included = True
        candidate.reason = f"lowers the validation loss by {contribution:.4f} nats/token"


def _merge(
    model: Any, names: dict[str, str], labels: list[str], request: MergeRequest, as_name: str
) -> float:
    ranks = sum(model.peft_config[names[label]].r for label in labels)
    model.add_weighted_adapter(
        adapters=[names[label] for label in labels],
        weights=[1.0] * len(labels),
        adapter_name=as_name,
        combination_type=request.combination,
        svd_rank=min(ranks, MERGED_RANK_MAX),
        density=request.density,
    )
    model.base_model.set_adapter(as_name)
    return _loss(model, request.validation)


def _save(model: Any, adapter_name: str, out: Path, manifest: dict[str, Any]) -> None:
    # deferred: peft and safetensors.torch are heavy
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    staging = out.with_name(f".{out.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    state = get_peft_model_state_dict(model, adapter_name=adapter_name)
    save_file(
        {k: v.detach().contiguous() for k, v in state.items()},
        staging / "adapter_model.safetensors",
    )
    config = model.peft_config[adapter_name].to_dict()
    config["target_modules"] = sorted(config["target_modules"] or [])
    config["base_model_name_or_path"] = manifest.get("base", {}).get("id", "")
    (staging / "adapter_config.json").write_text(json.dumps(config, indent=2, default=str))
    manifest = {**manifest, "lora": json.loads(json.dumps(config, default=str))}
    (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)


def _loss(model: Any, windows: Sequence[tuple[int, ...]]) -> float:

    return math.log(perplexity(model, windows))


def _shares(outcome: MergeOutcome, owner: str) -> list[tuple[str, int, str]]:
    """Each contributing creator's basis points: their children's share of all contribution."""
    own = max(outcome.loss["base"] - outcome.loss["parent"], 0.0)
    included = [c for c in outcome.candidates if c.included and c.contribution]
    total = own + sum(c.contribution or 0.0 for c in included)
    by_creator: dict[str, tuple[float, list[str]]] = {}
    for c in included:
        if c.creator == owner:
            continue
        value, labels = by_creator.get(c.creator, (0.0, []))
        by_creator[c.creator] = (value + (c.contribution or 0.0), [*labels, c.label])
    shares = []
    for creator, (value, labels) in sorted(by_creator.items()):
        bps = math.floor(BPS * value / total) if total > 0 else 0
        if bps > 0:
            shares.append(
                (
                    creator,
                    bps,
                    f"{', '.join(labels)} lowered the validation loss by {value:.4f} nats/token "
                    f"of {total:.4f} in all (the parent's own: {own:.4f})",
                )
            )
    return shares


def _merged_manifest(
    base: Any,
    owner: Account,
    parent: AdapterVersion,
    children: dict[str, AdapterVersion],
    request: MergeRequest,
) -> dict[str, Any]:
    """Provenance of a merged version: the documents of the parent and of every merged child."""
    documents, licences = [], set()
    for version in [parent, *children.values()]:
        manifest = manifest_of(version)
        for document in manifest.get("documents", []):
            documents.append({**document, "via": f"{version.adapter.name}@{version.version}"})
        licences.update(manifest.get("licences", []))
    return {
        "format": 1,
        "name": parent.adapter.name,
        "creator": owner.name,
        "base": {
            "id": base.id,
            "weights_sha256": base.weights_sha256,
            "licence": base.licence,
            "provenance": base.provenance_class,
            "precision": manifest_precision(parent),
        },
        "method": "merge",
        "merge": {
            "from": f"{parent.adapter.name}@{parent.version}",
            "combination": request.combination,
            "density": request.density,
        },
        "documents": documents,
        "licences": sorted(licences),
        "metrics": {},
        "run": {"hardware": hardware(), "libraries": library_versions()},
    }


def materialise_version(blobs_dir: Path, version: AdapterVersion, folder: Path) -> Path:
    """A PEFT folder for a catalogued version: its config and its weights, read by hash."""
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(version.config_json)
    (folder / "adapter_model.safetensors").write_bytes(read_blob(blobs_dir, version.weights_sha256))
    return folder


def _screening_summary(version: AdapterVersion) -> str:
    checks = json.loads(version.screening_json or "{}").get("checks", [])
    flagged = [f"{c['stage']}: {c['detail']}" for c in checks if c["outcome"] in ("flag", "fail")]
    return "; ".join(flagged) or "not approved by screening"


def _check(request: MergeRequest) -> None:
    problems = []
    if request.combination not in COMBINATIONS:
        problems.append(
            f"combination {request.combination!r} is not one of {', '.join(COMBINATIONS)}"
        )
    if not 0 < request.density <= 1:
        problems.append(f"density {request.density} must be in (0, 1]")
    if request.min_contribution < 0:
        problems.append(f"minimum contribution {request.min_contribution} must be >= 0")
    if not request.validation:
        problems.append(
            "no validation windows: choose validation documents (--documents or --tag) long "
            "enough for one window"
        )
    if len(request.validation) > VALIDATION_WINDOWS_MAX:
        problems.append(
            f"{len(request.validation)} validation windows; at most {VALIDATION_WINDOWS_MAX}"
        )
    if problems:
        raise InvalidInput("; ".join(problems))
