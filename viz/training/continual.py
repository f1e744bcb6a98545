"""Continual updates: a new version of an adapter trained on new documents, without forgetting.

    earlier = earlier_documents(session, blobs_dir, tokenizer, previous_folder, account)
    result = update_adapter(previous=previous_folder, earlier=earlier, guard=parse_guard("replay"),
                            name="qasper-nlp-v2", training_set=new_documents, ...)
    report = continual_report(result.manifest)  # forgetting and gain

The new version starts from the previous version's weights and trains on the new documents.
Plain fine-tuning (`naive`) forgets: perplexity on the earlier documents climbs as the adapter
moves towards the new ones. The guards, which combine with `+`:

- `replay`  mixes a seeded sample of the earlier training windows into the new ones
            (`replay_ratio` earlier windows per new window): rehearsal, the simplest guard
            and usually the strongest;
- `l2`      adds strength/2 x sum (theta - theta_prev)^2 over the LoRA weights: stay near
            the previous version;
- `ewc`     the same penalty weighted by each weight's diagonal Fisher information on the
            earlier windows (Kirkpatrick et al. 2017), normalised to mean 1: weights the
            earlier documents depend on move least;
- `olora`   orthogonal-subspace LoRA (Wang et al. 2023): the previous version's rank-r update
            is kept frozen as the first r ranks of a rank-2r adapter, new ranks are trained,
            and strength x sum ||A_prev A_new^T||^2 keeps their input subspace orthogonal to
            the previous one. The version doubles its rank.

Forgetting is the relative increase in perplexity on the earlier documents (held-out ones when
the previous version held some out, else its training documents) from the previous version to
the new one; gain is the relative decrease on the new documents' held-out windows (or training
windows with --held-out 0). Both are measured by the trainer before step 0 and after the last.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from viz.documents import get_document
from viz.errors import InvalidInput, NotFound
from viz.licences import training_refusal
from viz.store.blobs import sha256_bytes
from viz.store.schema import Account
from viz.training.adapters import read_manifest
from viz.training.config import TrainingConfig
from viz.training.dataset import tokenise_document
from viz.training.evaluate import spread
from viz.training.trainer import Start, TrainingResult, train_adapter

__all__ = [
    "DEFAULT_GUARD",
    "GUARD_PARTS",
    "ContinualReport",
    "Earlier",
    "Guard",
    "continual_report",
    "continual_start",
    "earlier_documents",
    "load_lora_weights",
    "set_lora_weights",
    "parse_guard",
    "update_adapter",
    "update_config",
]

GUARD_PARTS = ("replay", "l2", "ewc", "olora")
DEFAULT_GUARD = "replay"
DEFAULT_STRENGTH = {"l2": 0.05, "ewc": 0.05, "olora": 0.5}
REPLAY_RATIO = 1.0
FISHER_WINDOWS = 16


@dataclass(frozen=True)
class Guard:
    """What protects the earlier documents during an update (see the module docstring)."""

    replay: bool = True
    penalty: str | None = None  # l2 | ewc | olora
    strength: float = 0.0
    replay_ratio: float = REPLAY_RATIO

    @property
    def name(self) -> str:
        parts = (["replay"] if self.replay else []) + ([self.penalty] if self.penalty else [])
        return "+".join(parts) or "naive"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "replay": self.replay,
            "replay_ratio": self.replay_ratio if self.replay else 0.0,
            "penalty": self.penalty,
            "strength": self.strength,
        }


def parse_guard(
    text: str, *, strength: float | None = None, replay_ratio: float = REPLAY_RATIO
) -> Guard:
    """`naive`, `replay`, `l2`, `ewc`, `olora` or a `+` combination such as `replay+ewc`.

    Raises:
        InvalidInput: an unknown part, two penalties, a negative strength or replay ratio.
    """
    parts = [p.strip() for p in text.lower().split("+") if p.strip()]
    if parts == ["naive"]:
        parts = []
    unknown = [p for p in parts if p not in GUARD_PARTS]
    penalties = [p for p in parts if p != "replay"]
    problems = []
    if unknown or not text.strip():
        problems.append(
            f"guard {text!r} is not understood; use naive, or {', '.join(GUARD_PARTS)} "
            "joined by '+' (e.g. replay+ewc)"
        )
    elif len(penalties) > 1:
        problems.append(f"guard {text!r} names {len(penalties)} penalties; choose one of them")
    if strength is not None and strength < 0:
        problems.append(f"strength {strength} must be >= 0")
    if not 0 < replay_ratio <= 10:
        problems.append(f"replay ratio {replay_ratio} must be above 0 and at most 10")
    if problems:
        raise InvalidInput("; ".join(problems))
    penalty = penalties[0] if penalties else None
    chosen = strength if strength is not None else DEFAULT_STRENGTH.get(penalty or "", 0.0)
    return Guard("replay" in parts, penalty, chosen if penalty else 0.0, replay_ratio)


@dataclass(frozen=True)
class Earlier:
    """The previous version's documents, re-read from the catalogue and tokenised like it."""

    train: tuple[tuple[int, ...], ...]
    evaluation: tuple[tuple[int, ...], ...]
    evaluation_source: str  # "held-out documents" | "training documents"
    documents: tuple[int, ...]
    skipped: tuple[str, ...] = ()


def earlier_documents(
    session: Session, blobs_dir: Path, tokenizer: Any, previous: Path, account: Account
) -> Earlier:
    """The windows of the documents the adapter in `previous` was trained and evaluated on.

    A document is used only if it is still in the catalogue with the same sha256 and may still
    be trained on by `account` (the owner may have withdrawn permission since): the others are
    skipped, with the reason, rather than replayed against their owner's wish.

    Raises:
        InvalidInput: no earlier document can be used, so forgetting cannot be measured.
    """
    manifest = read_manifest(previous)
    length = manifest["hyperparameters"]["sequence_length"]
    overlap = manifest["hyperparameters"]["overlap"]
    split: dict[str, list[tuple[int, ...]]] = {"train": [], "held_out": []}
    used, skipped = [], []
    for entry in manifest["documents"]:
        reason = None
        try:
            document = get_document(session, entry["id"])
        except NotFound:
            reason = "it is no longer in the catalogue"
        else:
            if document.sha256 != entry["sha256"]:
                reason = "its content changed since the previous version"
            elif document.ai_training != "allowed":
                reason = f"ai_training is now {document.ai_training}"
            elif refusal := training_refusal(document.licence):
                reason = refusal
            elif document.owner_id != account.id:
                reason = f"it belongs to {document.owner.name}, not {account.name}"
        if reason:
            skipped.append(f"document {entry['id']}: {reason}")
            continue
        tokens = tokenise_document(document, blobs_dir, tokenizer, length, overlap)
        split[entry["split"]].extend(tokens.windows)
        used.append(document.id)
    source = "held-out documents" if split["held_out"] else "training documents"
    evaluation = split["held_out"] or split["train"]
    if not evaluation:
        raise InvalidInput(
            "none of the previous version's documents can be used ("
            + "; ".join(skipped or ["it lists none"])
            + "): forgetting cannot be measured or guarded; train a new adapter instead"
        )
    return Earlier(tuple(split["train"]), tuple(evaluation), source, tuple(used), tuple(skipped))


def update_config(previous: dict[str, Any], guard: Guard, **overrides: Any) -> TrainingConfig:
    """The previous version's LoRA shape and windowing, with the run settings overridden.

    O-LoRA keeps the previous ranks and adds as many new ones: rank and alpha double, so the
    scale alpha / rank of the kept ranks is unchanged.
    """
    hp = previous["hyperparameters"]
    kept = {
        key: hp[key]
        for key in ("method", "base_precision", "rank", "alpha", "dropout", "sequence_length")
    }
    kept["overlap"] = hp["overlap"]
    kept["target_modules"] = tuple(hp["target_modules"])
    if guard.penalty == "olora":
        kept["rank"], kept["alpha"] = 2 * hp["rank"], 2 * hp["alpha"]
    return replace(TrainingConfig(), **{**kept, **overrides})


def continual_start(
    previous: Path,
    earlier: Earlier,
    guard: Guard,
    new_evaluation: tuple[tuple[int, ...], ...],
    *,
    new_windows: int,
    seed: int,
    evaluation_windows: int = 32,
) -> Start:
    """The trainer's `Start` for an update from the adapter in `previous` under `guard`
    (forgetting and gain measured on at most `evaluation_windows` windows each)."""
    weights = load_lora_weights(previous)
    manifest = read_manifest(previous)
    replay: tuple[tuple[int, ...], ...] = ()
    if guard.replay and earlier.train:
        wanted = min(len(earlier.train), max(1, round(guard.replay_ratio * new_windows)))
        replay = tuple(random.Random(seed).sample(list(earlier.train), wanted))
    record = {
        "kind": "continual",
        "previous": {
            "name": manifest["name"],
            "weights_sha256": sha256_bytes((previous / "adapter_model.safetensors").read_bytes()),
        },
        "guard": guard.as_dict(),
        "replay_windows": len(replay),
        "earlier_documents": list(earlier.documents),
        "skipped_documents": list(earlier.skipped),
        "forgetting_measured_on": f"earlier {earlier.evaluation_source}",
    }
    evaluations = {
        "earlier": spread(earlier.evaluation, evaluation_windows),
        "new": spread(new_evaluation, evaluation_windows),
    }
    if guard.penalty == "olora":
        rank = int(manifest["lora"]["r"])
        return _olora_start(weights, rank, guard.strength, replay, evaluations, record)
    return _penalty_start(weights, guard, earlier, seed, replay, evaluations, record)


def _olora_start(
    weights: dict[str, Any],
    rank: int,
    strength: float,
    replay: tuple[tuple[int, ...], ...],
    evaluations: dict[str, Any],
    record: dict[str, Any],
) -> Start:
    """O-LoRA: the previous `rank` ranks kept frozen, new ranks kept orthogonal to them."""
    anchor: dict[Any, Any] = {}

    def initialise(model: Any) -> None:
        for a, b, old_a, old_b in _lora_pairs(model, weights):
            with _no_grad():
                a[:rank].copy_(old_a)
                b[:, :rank].copy_(old_b)
                b[:, rank:].zero_()
            anchor[id(a)] = (old_a.to(a.dtype), old_b.to(b.dtype))

    def orthogonality(model: Any, batch: Any, logits: Any) -> Any:
        total = 0.0
        for a, _b, _old_a, _old_b in _lora_pairs(model, weights):
            total = total + (a[:rank].detach() @ a[rank:].T).pow(2).sum()
        return strength * total

    def keep_previous(model: Any) -> None:
        with _no_grad():
            for a, b, _old_a, _old_b in _lora_pairs(model, weights):
                old_a, old_b = anchor[id(a)]
                a[:rank].copy_(old_a)
                b[:, :rank].copy_(old_b)

    return Start(initialise, replay, orthogonality, keep_previous, evaluations, record)


def _penalty_start(
    weights: dict[str, Any],
    guard: Guard,
    earlier: Earlier,
    seed: int,
    replay: tuple[tuple[int, ...], ...],
    evaluations: dict[str, Any],
    record: dict[str, Any],
) -> Start:
    """The previous weights, then (l2, ewc) a pull back towards them, or (no penalty) none."""
    anchor: dict[Any, Any] = {}

    def load_previous(model: Any) -> None:
        set_lora_weights(model, weights)
        if guard.penalty:
            trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
            anchor["theta"] = {n: p.detach().clone() for n, p in trainable.items()}
            if guard.penalty == "ewc":
                anchor["fisher"] = _fisher(model, trainable, earlier.train, seed)

    def penalty(model: Any, batch: Any, logits: Any) -> Any:
        total = 0.0
        fisher = anchor.get("fisher")
        for name, parameter in model.named_parameters():
            if name in anchor["theta"]:
                drift = (parameter - anchor["theta"][name]).pow(2)
                total = total + (drift * fisher[name] if fisher else drift).sum()
        return guard.strength / 2 * total

    return Start(
        load_previous, replay, penalty if guard.penalty else None, None, evaluations, record
    )


def update_adapter(
    *,
    previous: Path,
    earlier: Earlier,
    guard: Guard,
    name: str,
    account: str,
    base: Any,
    base_folder: Path,
    training_set: Any,
    config: TrainingConfig,
    adapters_dir: Path,
    tokenizer: Any,
    resume: bool = False,
    show_progress: bool = True,
    watch: Callable[[Any, Mapping[str, Any]], None] | None = None,
) -> TrainingResult:
    """Train `name` from the adapter in `previous` on `training_set` under `guard`.

    The report (`continual_report(result.manifest)`) says how much was forgotten and gained.
    `watch(model, evaluations)` runs after each step, after the guard's own hook, with the
    windows the report measures on ({"earlier": ..., "new": ...}): a benchmark's curves.
    """
    new_evaluation = tuple(training_set.held_out_windows() or training_set.train_windows())
    start = continual_start(
        previous,
        earlier,
        guard,
        new_evaluation,
        new_windows=len(training_set.train_windows()),
        seed=config.seed,
        evaluation_windows=config.evaluation_windows,
    )
    if not training_set.held_out:
        start.record["gain_measured_on"] = "new training documents (no held-out documents)"
    else:
        start.record["gain_measured_on"] = "new held-out documents"
    if watch is not None:
        evaluations = start.evaluations
        start = replace(
            start, after_step=_then(start.after_step, lambda model: watch(model, evaluations))
        )
    return train_adapter(
        name=name,
        account=account,
        base=base,
        base_folder=base_folder,
        training_set=training_set,
        config=config,
        adapters_dir=adapters_dir,
        tokenizer=tokenizer,
        resume=resume,
        show_progress=show_progress,
        start=start,
    )


def _then(
    first: Callable[[Any], None] | None, second: Callable[[Any], None]
) -> Callable[[Any], None]:
    """A step hook running `first` (when there is one), then `second`."""

    def both(model: Any) -> None:
        if first is not None:
            first(model)
        second(model)

    return both


@dataclass(frozen=True)
class ContinualReport:
    guard: str
    earlier_before: float
    earlier_after: float
    new_before: float
    new_after: float

    @property
    def forgetting(self) -> float:
        """Relative perplexity increase on the earlier documents (0.1: 10% worse)."""
        return self.earlier_after / self.earlier_before - 1

    @property
    def gain(self) -> float:
        """Relative perplexity decrease on the new documents (0.2: 20% better)."""
        return 1 - self.new_after / self.new_before


def continual_report(manifest: dict[str, Any]) -> ContinualReport:
    evaluations = manifest["metrics"]["evaluations"]
    return ContinualReport(
        manifest["start"]["guard"]["name"],
        evaluations["earlier"]["start"],
        evaluations["earlier"]["end"],
        evaluations["new"]["start"],
        evaluations["new"]["end"],
    )


def load_lora_weights(folder: Path) -> dict[str, Any]:
    """The LoRA tensors of a PEFT folder (safetensors only; never a pickle)."""
    # deferred: safetensors is heavy
    from safetensors.torch import load_file

    path = folder / "adapter_model.safetensors"
    if not path.is_file():
        raise InvalidInput(f"{folder} has no adapter_model.safetensors; is it a PEFT adapter?")
    return load_file(path)


def set_lora_weights(model: Any, weights: dict[str, Any]) -> None:
    """Load saved LoRA weights into the freshly wrapped model; shapes must match."""
    # deferred: peft is heavy
    from peft import set_peft_model_state_dict

    try:
        result = set_peft_model_state_dict(model, weights)
    except RuntimeError as error:
        raise InvalidInput(
            f"the previous version's weights do not fit this LoRA shape ({error}); update "
            "with the previous version's rank and target modules"
        ) from error
    missing = [k for k in getattr(result, "unexpected_keys", ()) if "lora_" in k]
    if missing:
        raise InvalidInput(f"the previous weights name layers this model lacks: {missing[:3]}")


def _lora_pairs(model: Any, weights: dict[str, Any]) -> list[tuple[Any, Any, Any, Any]]:
    """(A, B, saved A, saved B) of every adapted layer: live parameters and saved tensors."""
    pairs = []
    for module_name, module in model.named_modules():
        if not hasattr(module, "lora_A") or "default" not in getattr(module, "lora_A", {}):
            continue
        old_a = weights.get(f"{module_name}.lora_A.weight")
        old_b = weights.get(f"{module_name}.lora_B.weight")
        if old_a is None or old_b is None:
            raise InvalidInput(f"the previous version has no LoRA weights for {module_name}")
        pairs.append(
            (module.lora_A["default"].weight, module.lora_B["default"].weight, old_a, old_b)
        )
    return pairs


def _fisher(
    model: Any, trainable: dict[str, Any], windows: tuple[tuple[int, ...], ...], seed: int
) -> dict[str, Any]:
    """Diagonal empirical Fisher of the loss on a sample of earlier windows, mean 1."""
    # deferred: torch is heavy
    import torch

    if not windows:
        raise InvalidInput("EWC needs the previous version's training documents; none are left")
    sample = random.Random(seed + 1).sample(list(windows), min(FISHER_WINDOWS, len(windows)))
    device = next(model.parameters()).device
    squares = {name: torch.zeros_like(p) for name, p in trainable.items()}
    for start in range(0, len(sample), 4):
        batch = torch.tensor(sample[start : start + 4], device=device)
        model(input_ids=batch, labels=batch).loss.backward()
        for name, parameter in trainable.items():
            if parameter.grad is not None:
                squares[name] += parameter.grad.detach().pow(2)
                parameter.grad = None
    mean = torch.cat([s.flatten() for s in squares.values()]).mean().clamp_min(1e-30)
    return {name: s / mean for name, s in squares.items()}


def _no_grad() -> Any:
    # deferred: torch is heavy
    import torch

    return torch.no_grad()
