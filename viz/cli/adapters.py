"""`viz adapters`: train LoRA / QLoRA adapters on catalogued documents and evaluate them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import typer

from viz.accounts import get_account
from viz.cli._context import session, state, table
from viz.models import get_base_model
from viz.models.loading import ensure_cached, load_folder
from viz.models.precision import choose_training, cuda_available
from viz.training import TrainingConfig, general_windows, select_documents
from viz.training.adapters import adapter_folder, list_adapters, load_adapter, read_manifest
from viz.training.continual import DEFAULT_GUARD, continual_report, parse_guard
from viz.training.dataset import TrainingSet, tokenise_document
from viz.training.evaluate import perplexities, spread
from viz.training.recipe import load_tokenizer, train_from_documents, update_from_documents

app = typer.Typer(
    help="Adapters: train on your documents, update them, evaluate, list.\n\n"
    "Example: viz adapters train --name qasper-nlp --account ai2 --tag nlp"
)


# `viz adapters train`'s options that are TrainingConfig fields of the same name
CONFIG_FIELDS = [
    "method",
    "base_precision",
    "rank",
    "alpha",
    "dropout",
    "target_modules",
    "learning_rate",
    "steps",
    "epochs",
    "batch_size",
    "sequence_length",
    "overlap",
    "seed",
    "checkpoint_every",
    "optimizer",
    "gradient_checkpointing",
    "evaluation_windows",
]
EVALUATION_WINDOWS = typer.Option(
    32,
    "--eval-windows",
    help="Windows per perplexity measured before and after training (fewer: faster, rougher)",
)

# The longer options of `viz adapters train`.
METHOD = typer.Option(
    "auto",
    help="auto (qlora on CUDA and on CPUs with native bf16, else lora on fp32), qlora (NF4 "
    "base) or lora (fp32 base)",
)
BASE_PRECISION = typer.Option(
    None,
    help="Base precision while training: nf4 (qlora), fp32 or bf16 (lora), or auto (lora: "
    "bf16 where the CPU has it natively, else fp32)",
)
GRADIENT_CHECKPOINTING = typer.Option(
    None,
    "--gradient-checkpointing/--no-gradient-checkpointing",
    help="Recompute activations in the backward pass: less memory, a third more time "
    "(default: on with CUDA, off on the CPU)",
    show_default=False,
)
TARGET_MODULES = typer.Option(
    ["all-linear"], "--target-module", help="Layers to adapt (repeatable)"
)
HELD_OUT = typer.Option(
    0.25, help="Fraction of documents held out for evaluation (0: none, no evaluation)"
)
OPTIMIZER = typer.Option(
    "auto", help="auto | adamw | paged_adamw_8bit | paged_adamw_32bit (paged needs CUDA)"
)
FROM_PARENT = typer.Option(
    [],
    "--from-parent",
    help="Parent chain to start from: local adapter names, most general first (repeatable)",
)
TRANSFER = typer.Option(
    None,
    help="With --from-parent: init (default, measured best: a copy of the parent, served "
    "alone), on-top (trained on the merged chain, served after it) or distil (KL to the "
    "chain, served alone)",
)
NPROC = typer.Option(
    1,
    help="Training processes (torchrun + DDP: gloo on CPU, nccl "
    "on CUDA); the batch is split between them",
)


@app.command("train")
def train(
    context: typer.Context,
    name: str = typer.Option(..., help="Adapter name (3-64 chars of a-z 0-9 . _ -)"),
    account: str = typer.Option(..., help="Training account: must own the documents"),
    base: str | None = typer.Option(None, help="Base model id (default: the configured one)"),
    documents: list[int] = typer.Option([], "--documents", "-d", help="Document id (repeat)"),
    owner: list[str] = typer.Option([], help="All documents of this account (repeatable)"),
    tag: list[str] = typer.Option([], "--tag", "-t", help="All documents with this tag"),
    method: str = METHOD,
    base_precision: str | None = BASE_PRECISION,
    rank: int = typer.Option(8, help="LoRA rank"),
    alpha: int = typer.Option(16, help="LoRA alpha"),
    dropout: float = typer.Option(0.05, help="LoRA dropout"),
    target_modules: list[str] = TARGET_MODULES,
    learning_rate: float = typer.Option(1e-3, help="AdamW learning rate"),
    steps: int | None = typer.Option(None, help="Optimizer steps (default 30 unless --epochs)"),
    epochs: float | None = typer.Option(None, help="Passes over the training windows"),
    batch_size: int = typer.Option(4, help="Windows per step"),
    sequence_length: int = typer.Option(128, help="Tokens per window"),
    overlap: int = typer.Option(16, help="Tokens shared by consecutive windows"),
    held_out: float = HELD_OUT,
    seed: int = typer.Option(0, help="Random seed (same seed, same adapter)"),
    checkpoint_every: int = typer.Option(10, help="Save a resumable checkpoint every N steps"),
    optimizer: str = OPTIMIZER,
    gradient_checkpointing: bool | None = GRADIENT_CHECKPOINTING,
    evaluation_windows: int = EVALUATION_WINDOWS,
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run"),
    from_parent: list[str] = FROM_PARENT,
    transfer: str | None = TRANSFER,
    distil_strength: float = typer.Option(1.0, help="Weight of the distillation loss"),
    nproc: int = NPROC,
) -> None:
    """Train an adapter on documents you own whose ai_training permission is allowed.

    Example: viz adapters train --name qasper-nlp --account ai2 --tag nlp --steps 30 --nproc 2

    A sub-domain adapter can start from its parent chain:

    Example: viz adapters train --name mt --account ai2 --tag mt --method lora
    --from-parent english --from-parent qasper-nlp --transfer init
    """
    settings = state(context).settings
    result = train_from_documents(
        state(context).engine(),
        name=name,
        account=account,
        base=base or settings.default_base_model,
        config=_training_config(context.params),
        blobs_dir=settings.blobs_dir,
        models_dir=settings.models_dir,
        adapters_dir=settings.adapters_dir,
        document_ids=documents,
        owners=owner,
        tags=tag,
        parents=from_parent,
        transfer=transfer,
        distil_strength=distil_strength,
        nproc=nproc,
        resume=resume,
        say=_note,
    )
    note = result.manifest["run"].get("optimizer_note")
    if note:
        typer.echo(f"note: {note}", err=True)
    _print_metrics(result.manifest["metrics"])
    typer.echo(f"adapter written to {result.folder}")


@app.command("update")
def update(
    context: typer.Context,
    name: str = typer.Argument(..., help="The adapter to update (a folder in the adapters dir)"),
    output: str | None = typer.Option(
        None, "--output", "-o", help="Name of the new version's folder (default: NAME-v2, ...)"
    ),
    documents: list[int] = typer.Option([], "--documents", "-d", help="New document id (repeat)"),
    tag: list[str] = typer.Option([], "--tag", "-t", help="All new documents with this tag"),
    guard: str = typer.Option(
        DEFAULT_GUARD,
        help="Forgetting guard: naive, replay, l2, ewc, olora or a '+' mix (e.g. replay+ewc)",
    ),
    strength: float | None = typer.Option(
        None, help="Penalty strength for l2 / ewc / olora (default per penalty)"
    ),
    replay_ratio: float = typer.Option(1.0, help="Earlier windows replayed per new window"),
    learning_rate: float = typer.Option(1e-3, help="AdamW learning rate"),
    steps: int = typer.Option(30, help="Optimizer steps"),
    batch_size: int = typer.Option(4, help="Windows per step"),
    held_out: float = typer.Option(
        0.25, help="Fraction of the new documents held out to measure the gain (0: none)"
    ),
    seed: int = typer.Option(0, help="Random seed (same seed, same adapter)"),
    evaluation_windows: int = EVALUATION_WINDOWS,
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted update"),
) -> None:
    """Train a new version of an adapter on new documents, guarding against forgetting.

    The new version starts from NAME's weights with its LoRA shape; by default it replays as
    many earlier training windows as there are new ones. It prints forgetting (perplexity
    increase on the earlier documents) and gain (decrease on the new ones).

    Example: viz adapters update qasper-nlp --documents 7 --guard replay --steps 30
    """
    settings = state(context).settings
    chosen_guard = parse_guard(guard, strength=strength, replay_ratio=replay_ratio)
    target = output or _next_name(settings.adapters_dir, name)
    result = update_from_documents(
        state(context).engine(),
        previous=name,
        name=target,
        guard=chosen_guard,
        blobs_dir=settings.blobs_dir,
        models_dir=settings.models_dir,
        adapters_dir=settings.adapters_dir,
        document_ids=documents,
        tags=tag,
        steps=steps,
        batch_size=batch_size,
        learning_rate=learning_rate,
        held_out_fraction=held_out,
        evaluation_windows=evaluation_windows,
        seed=seed,
        resume=resume,
        say=_note,
    )
    _print_update(name, target, result.manifest)
    typer.echo(f"adapter written to {result.folder}")


def _print_update(name: str, target: str, manifest: dict[str, Any]) -> None:
    """Forgetting and gain: perplexities of the previous version and the new one."""
    report = continual_report(manifest)
    rows = [
        [
            f"earlier documents ({manifest['start']['forgetting_measured_on']})",
            f"{report.earlier_before:.3f}",
            f"{report.earlier_after:.3f}",
            f"forgetting {report.forgetting:+.1%}",
        ],
        [
            f"new documents ({manifest['start']['gain_measured_on']})",
            f"{report.new_before:.3f}",
            f"{report.new_after:.3f}",
            f"gain {report.gain:+.1%}",
        ],
    ]
    typer.echo(table(rows, ["perplexity on", name, target, "change"]))


def _training_config(options: dict[str, Any]) -> TrainingConfig:
    """The training settings among `viz adapters train`'s options (30 steps unless --epochs;
    the method and base precision chosen for this machine, printed with the reason)."""
    values = {field: options[field] for field in CONFIG_FIELDS}
    values["held_out_fraction"] = options["held_out"]
    choice = choose_training(options["method"], options["base_precision"], cuda=cuda_available())
    values["method"], values["base_precision"] = choice.method, choice.base_precision
    typer.echo(f"training method: {choice.method} ({choice.reason})", err=True)
    values["target_modules"] = tuple(values["target_modules"])
    if values["steps"] is None and values["epochs"] is None:
        values["steps"] = 30
    return TrainingConfig(**values)


def _next_name(adapters_dir: Path, name: str) -> str:
    """NAME-v2 for NAME, NAME-v3 for NAME-v2, skipping names already taken."""
    match = re.fullmatch(r"(.+)-v(\d+)", name)
    stem, number = (match.group(1), int(match.group(2))) if match else (name, 1)
    while (adapters_dir / f"{stem}-v{number + 1}").exists():
        number += 1
    return f"{stem}-v{number + 1}"


@app.command("eval")
def eval_(
    context: typer.Context,
    name: str = typer.Argument(..., help="Adapter name"),
    documents: list[int] = typer.Option(
        [], "--documents", "-d", help="Evaluate on these documents instead of the held-out ones"
    ),
) -> None:
    """Re-run the before/after perplexity evaluation of an adapter.

    Example: viz adapters eval qasper-nlp --documents 3
    """
    settings = state(context).settings
    folder = adapter_folder(settings.adapters_dir, name)
    manifest = read_manifest(folder)
    ids = documents or [d["id"] for d in manifest["documents"] if d["split"] == "held_out"]
    with session(context) as database:
        record = get_base_model(database, manifest["base"]["id"])
        trainer = get_account(database, manifest["creator"])
        chosen = select_documents(database, trainer, document_ids=ids)
    base_folder = ensure_cached(record, settings.models_dir)
    tokenizer = load_tokenizer(base_folder)
    length = manifest["hyperparameters"]["sequence_length"]
    overlap = manifest["hyperparameters"]["overlap"]
    evaluation = TrainingSet(
        (),
        tuple(tokenise_document(d, settings.blobs_dir, tokenizer, length, overlap) for d in chosen),
        length,
        overlap,
    )
    model = load_adapter(folder, load_folder(base_folder, manifest["base"]["precision"]))
    windows, general = spread(evaluation.held_out_windows()), general_windows(tokenizer, length)
    after = perplexities(model, windows, general)
    before = perplexities(model, windows, general, adapter=False)
    _print_metrics(
        {
            "held_out_perplexity_base": before["held_out"],
            "held_out_perplexity_adapter": after["held_out"],
            "general_perplexity_base": before["general"],
            "general_perplexity_adapter": after["general"],
        }
    )


@app.command("list")
def list_(context: typer.Context) -> None:
    """List trained adapters.

    Example: viz adapters list
    """
    rows = []
    for folder in list_adapters(state(context).settings.adapters_dir):
        manifest = read_manifest(folder)
        metrics = manifest["metrics"]
        rows.append(
            [
                manifest["name"],
                manifest["creator"],
                manifest["base"]["id"],
                manifest["method"],
                ",".join(manifest["licences"]),
                f"{_number(metrics['held_out_perplexity_base'], 2)} -> "
                f"{_number(metrics['held_out_perplexity_adapter'], 2)}",
            ]
        )
    typer.echo(
        table(rows, ["name", "creator", "base", "method", "licences", "held-out perplexity"])
        if rows
        else "no adapters yet; train one with: viz adapters train --name NAME ..."
    )


def _number(value: float, places: int = 3) -> str:
    """A metric, or '-' for one not measured (NaN: no held-out documents)."""
    return "-" if value != value else f"{value:.{places}f}"


def _print_metrics(metrics: dict[str, float]) -> None:
    rows = [
        [
            "held-out documents",
            _number(metrics["held_out_perplexity_base"]),
            _number(metrics["held_out_perplexity_adapter"]),
            _number(metrics["held_out_perplexity_adapter"] / metrics["held_out_perplexity_base"]),
        ],
        [
            "general sample",
            f"{metrics['general_perplexity_base']:.3f}",
            f"{metrics['general_perplexity_adapter']:.3f}",
            f"{metrics['general_perplexity_adapter'] / metrics['general_perplexity_base']:.3f}",
        ],
    ]
    typer.echo(table(rows, ["perplexity on", "base", "base+adapter", "adapter / base"]))


def _note(message: str) -> None:
    typer.echo(message, err=True)
