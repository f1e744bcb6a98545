"""The one training recipe: catalogued documents in, a trained adapter folder out.

    result = train_from_documents(engine, name="qasper-nlp", account="ai2",
                                  base="smollm2-135m-instruct", tags=["nlp"],
                                  config=TrainingConfig(steps=30), blobs_dir=home / "blobs",
                                  models_dir=home / "models", adapters_dir=home / "adapters")

The steps, in order: check the options; select the documents (each one checked for the
training permission and licence, `select_documents`); fetch the base model; tokenise the
documents into a training set with held-out documents; train (one process, a parent chain's
`Start`, or `nproc` processes under torchrun); the trainer writes the weights, the manifest and
the model card. `update_from_documents` is the same recipe for a new version of an adapter: it
starts from the previous version's weights and guards against forgetting
(`viz.training.continual`). `viz adapters train`, `viz adapters update`, `viz eval routing` and
the benches all call these two functions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from viz.accounts import get_account
from viz.errors import InvalidInput
from viz.models import get_base_model
from viz.models.loading import ensure_cached
from viz.store.database import session_scope
from viz.store.schema import Document
from viz.training.adapters import adapter_folder, read_manifest
from viz.training.config import TrainingConfig, check_adapter_name
from viz.training.continual import (
    Earlier,
    Guard,
    earlier_documents,
    update_adapter,
    update_config,
)
from viz.training.dataset import (
    TrainingSet,
    build_training_set,
    model_context_length,
    select_documents,
)
from viz.training.distributed import launch
from viz.training.trainer import TrainingResult, train_adapter
from viz.training.transfer import DISTIL_STRENGTH, TRANSFERS, transfer_start

__all__ = ["load_tokenizer", "train_from_documents", "update_from_documents"]

Say = Callable[[str], None]


def train_from_documents(
    engine: Engine,
    *,
    name: str,
    account: str,
    base: str,
    config: TrainingConfig,
    blobs_dir: Path,
    models_dir: Path,
    adapters_dir: Path,
    document_ids: Sequence[int] = (),
    owners: Sequence[str] = (),
    tags: Sequence[str] = (),
    parents: Sequence[str] = (),
    transfer: str | None = None,
    distil_strength: float = DISTIL_STRENGTH,
    nproc: int = 1,
    resume: bool = False,
    show_progress: bool = True,
    say: Say = lambda _message: None,
    announce: Callable[[TrainingSet], str] | None = None,
) -> TrainingResult:
    """Train adapter `name` for `account` on the documents named by id, owner or tag.

    `parents` are local adapter names, most general first, to start from (`transfer`: init,
    on-top or distil; init by default). `say` hears one line before training starts (by
    default what `viz adapters train` prints; `announce` words it otherwise).

    Raises:
        InvalidInput: bad options or config, no documents, a parent chain with `nproc` > 1.
        Forbidden: a document may not be trained on by `account`.
        NotFound: an unknown account, document, base or parent.
        Conflict: the adapter exists, or an interrupted run exists and `resume` is False.
    """
    check_adapter_name(name)  # before any slow work: a bad name fails in a blink
    kind, chain = _transfer(parents, transfer, nproc, adapters_dir)
    config.check()
    with session_scope(engine) as session:
        trainer = get_account(session, account)
        owner_rows = [get_account(session, owner) for owner in owners]
        chosen = select_documents(
            session, trainer, document_ids=document_ids, owners=owner_rows, tags=tags
        )
        record = get_base_model(session, base)
    folder = ensure_cached(record, models_dir)
    tokenizer = load_tokenizer(folder)
    training_set = _training_set(chosen, blobs_dir, tokenizer, folder, config)
    say(announce(training_set) if announce else _announcement(name, config, training_set))
    arguments: dict[str, Any] = dict(
        name=name,
        account=account,
        base=record,
        base_folder=folder,
        training_set=training_set,
        config=config,
        adapters_dir=adapters_dir,
        resume=resume,
    )
    if nproc > 1:
        launch(nproc=nproc, **arguments)
        return TrainingResult(
            adapters_dir / name, read_manifest(adapter_folder(adapters_dir, name))
        )
    start = transfer_start(
        kind, chain, base_folder=folder, precision=config.precision, strength=distil_strength
    )
    return train_adapter(tokenizer=tokenizer, start=start, show_progress=show_progress, **arguments)


def update_from_documents(
    engine: Engine,
    *,
    previous: str,
    name: str,
    guard: Guard,
    blobs_dir: Path,
    models_dir: Path,
    adapters_dir: Path,
    document_ids: Sequence[int] = (),
    tags: Sequence[str] = (),
    steps: int = 30,
    batch_size: int = 4,
    learning_rate: float = 1e-3,
    held_out_fraction: float = 0.25,
    evaluation_windows: int = 32,
    seed: int = 0,
    resume: bool = False,
    show_progress: bool = True,
    say: Say = lambda _message: None,
    watch: Callable[[Any, Mapping[str, Any]], None] | None = None,
) -> TrainingResult:
    """Train `name`, a new version of adapter `previous`, on new documents under `guard`.

    The same recipe as `train_from_documents`, by the previous version's creator, on its base
    and with its LoRA shape and windowing; the earlier documents are re-read from the catalogue
    (replayed and measured for forgetting). `say` hears the notes and the one line before
    training that `viz adapters update` prints. `continual_report(result.manifest)` says what
    was forgotten and gained; `watch(model, evaluations)` runs after each step (see
    `update_adapter`).

    Raises:
        InvalidInput: bad settings, no documents, no earlier document left to measure.
        Forbidden: a new document may not be trained on by the creator.
        NotFound: an unknown adapter, document or base.
    """
    folder = adapter_folder(adapters_dir, previous)
    manifest = read_manifest(folder)
    config = update_config(
        manifest,
        guard,
        steps=steps,
        batch_size=batch_size,
        learning_rate=learning_rate,
        held_out_fraction=held_out_fraction,
        evaluation_windows=evaluation_windows,
        seed=seed,
    )
    config.check()
    check_adapter_name(name)
    with session_scope(engine) as session:
        trainer = get_account(session, manifest["creator"])
        chosen = select_documents(session, trainer, document_ids=document_ids, tags=tags)
        record = get_base_model(session, manifest["base"]["id"])
        base_folder = ensure_cached(record, models_dir)
        tokenizer = load_tokenizer(base_folder)
        earlier = earlier_documents(session, blobs_dir, tokenizer, folder, trainer)
    training_set = _training_set(chosen, blobs_dir, tokenizer, base_folder, config)
    _update_notes(say, previous, name, guard, earlier, chosen, training_set)
    return update_adapter(
        previous=folder,
        earlier=earlier,
        guard=guard,
        name=name,
        account=manifest["creator"],
        base=record,
        base_folder=base_folder,
        training_set=training_set,
        config=config,
        adapters_dir=adapters_dir,
        tokenizer=tokenizer,
        resume=resume,
        show_progress=show_progress,
        watch=watch,
    )


def _transfer(
    parents: Sequence[str], transfer: str | None, nproc: int, adapters_dir: Path
) -> tuple[str, list[Path]]:
    """(transfer kind, parent folders): scratch without parents, init by default with them."""
    if transfer is not None and not parents:
        raise InvalidInput(f"--transfer {transfer} needs the parent: add --from-parent NAME")
    kind = (transfer or "init") if parents else "scratch"
    if kind not in TRANSFERS:
        raise InvalidInput(f"--transfer {kind!r} is not one of {', '.join(TRANSFERS[1:])}")
    chain = [adapter_folder(adapters_dir, parent) for parent in parents]
    if parents and nproc > 1:
        raise InvalidInput("--from-parent trains in one process; drop --nproc")
    return kind, chain


def _announcement(name: str, config: TrainingConfig, training_set: TrainingSet) -> str:
    return (
        f"training {name} ({config.method}) on {len(training_set.train)} document(s), "
        f"{len(training_set.train_windows())} windows; holding out "
        f"{len(training_set.held_out)} document(s)"
    )


def _update_notes(
    say: Say,
    previous: str,
    name: str,
    guard: Guard,
    earlier: Earlier,
    chosen: Sequence[Document],
    training_set: TrainingSet,
) -> None:
    """What `viz adapters update` prints before training: overlaps, skipped, the plan."""
    repeated = sorted(set(earlier.documents) & {d.id for d in chosen})
    if repeated:
        say(
            f"note: document(s) {repeated} were already in {previous}'s documents; their gain "
            "is not a new domain's"
        )
    for skipped in earlier.skipped:
        say(f"note: not replayed: {skipped}")
    say(
        f"updating {previous} -> {name} with guard {guard.name} on "
        f"{len(training_set.train)} new document(s); earlier: {len(earlier.documents)} "
        "document(s)"
    )


def load_tokenizer(folder: Path) -> Any:
    """The base model's tokenizer, from its cached folder."""
    from transformers import AutoTokenizer  # deferred: transformers is heavy

    return AutoTokenizer.from_pretrained(folder)


def _training_set(
    documents: Sequence[Document],
    blobs_dir: Path,
    tokenizer: Any,
    base_folder: Path,
    config: TrainingConfig,
) -> TrainingSet:
    return build_training_set(
        list(documents),
        blobs_dir,
        tokenizer,
        sequence_length=config.sequence_length,
        overlap=config.overlap,
        held_out_fraction=config.held_out_fraction,
        context_length=model_context_length(base_folder),
    )
