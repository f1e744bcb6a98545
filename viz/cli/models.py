"""`viz models`: the base-model registry and memory per precision variant."""

from __future__ import annotations

from typing import Any

import typer

from viz.cli._context import session, state, table
from viz.models import (
    PRECISIONS,
    add_base_model,
    estimate_memory,
    get_base_model,
    list_base_models,
    measured_bytes,
    parameter_split,
)
from viz.models.loading import ensure_cached, load_folder, model_folder
from viz.models.provenance import verify_provenance
from viz.training.pretrain import SIZES, PretrainConfig
from viz.training.pretraining import pretrain_from_documents

app = typer.Typer(
    help="Base models: list, show (licence, provenance, memory), add, pretrain from openly "
    "licensed documents, verify a base's provenance.\n\n"
    "Example: viz models show smollm2-135m-instruct"
)


@app.command("list")
def list_(context: typer.Context) -> None:
    """List registered base models.

    Example: viz models list
    """
    with session(context) as database:
        rows = [
            [
                m.id,
                m.architecture,
                f"{m.parameter_count / 1e6:.1f}M",
                m.licence,
                m.provenance_class,
                m.source_kind,
            ]
            for m in list_base_models(database)
        ]
    typer.echo(table(rows, ["id", "architecture", "params", "licence", "provenance", "source"]))


@app.command("show")
def show(
    context: typer.Context,
    model_id: str = typer.Argument(..., help="Model id from viz models list"),
    measure: bool = typer.Option(True, help="Load each precision variant to measure its memory"),
    verify: bool = typer.Option(False, help="Rehash every weights file before loading"),
) -> None:
    """Show a base model: licence, data provenance, source, hash and memory per precision.

    Example: viz models show smollm2-135m-instruct --no-measure
    """
    settings = state(context).settings
    with session(context) as database:
        record = get_base_model(database, model_id)
    fields = {
        "model": record.id,
        "architecture": record.architecture,
        "parameters": f"{record.parameter_count:,}",
        "licence": record.licence,
        "provenance": record.provenance_class,
        "data sources": record.provenance_sources or "-",
        "source": f"{record.source_kind}: {record.source_ref}",
        "weights sha256": record.weights_sha256 or "-",
    }
    for name, value in fields.items():
        typer.echo(f"{name + ':':16}{value}")
    folder = ensure_cached(record, settings.models_dir, verify=verify)
    # deferred: transformers is heavy
    from transformers import AutoConfig

    estimates = estimate_memory(*parameter_split(AutoConfig.from_pretrained(folder)))
    rows = []
    for precision in PRECISIONS:
        measured = "-"
        if measure:
            model = load_folder(folder, precision)
            measured = _mib(measured_bytes(model))
            del model
        ratio = estimates[precision] / estimates["fp32"]
        rows.append([precision, _mib(estimates[precision]), measured, f"{ratio:.2f}"])
    typer.echo("")
    typer.echo("memory of the weights per precision (nf4: NF4 + double quantisation):")
    typer.echo(table(rows, ["precision", "estimated", "measured", "vs fp32"]))


@app.command("add")
def add(
    context: typer.Context,
    source: str = typer.Argument(..., help="HF model folder, .gguf file, or hub id org/name"),
    model_id: str = typer.Option(..., "--id", help="Id to register it under"),
    licence: str = typer.Option(..., "--licence", "--license", help="SPDX expression"),
    provenance: str = typer.Option(
        ..., help="Pretraining data: open-licensed-only | web-crawl | unknown"
    ),
    sources: str = typer.Option("", help="What the pretraining data was, in words"),
) -> None:
    """Register a base model from a local folder or GGUF file (hashes its weights).

    Example: viz models add ./my-model --id my-model --licence Apache-2.0 --provenance unknown
    """
    with session(context) as database:
        record = add_base_model(
            database,
            source,
            model_id=model_id,
            licence=licence,
            provenance_class=provenance,
            provenance_sources=sources,
        )
        typer.echo(
            f"registered {record.id}: {record.architecture}, "
            f"{record.parameter_count:,} parameters, {record.source_kind}, "
            f"sha256 {record.weights_sha256 or '-'}"
        )


@app.command("pretrain")
def pretrain(
    context: typer.Context,
    name: str = typer.Option(..., help="Id of the new base (lowercase letters, digits, . _ -)"),
    account: str = typer.Option(..., help="Your account: it must own the documents"),
    documents: list[int] = typer.Option([], "--documents", "-d", help="Document id (repeat)"),
    owner: list[str] = typer.Option([], help="All documents of this account (repeatable)"),
    tag: list[str] = typer.Option([], "--tag", "-t", help="All documents with this tag"),
    size: str = typer.Option("tiny", help=f"Model size: {' | '.join(SIZES)}"),
    tokens: int = typer.Option(200_000, min=1, help="Training tokens (steps x batch x context)"),
    batch_size: int = typer.Option(8, min=1, max=4096, help="Windows per step"),
    learning_rate: float = typer.Option(3e-3, min=0, help="Peak AdamW learning rate"),
    warmup_steps: int = typer.Option(10, min=0, help="Linear warm-up steps before cosine decay"),
    held_out: list[int] = typer.Option(
        [], "--held-out", help="Document id kept out for perplexity (default: a tenth, at least 1)"
    ),
    licence: str | None = typer.Option(
        None, "--licence", "--license", help="The base licence, if its documents allow a choice"
    ),
    seed: int = typer.Option(0, help="Random seed (same seed, same base)"),
    checkpoint_every: int = typer.Option(50, min=1, help="Save a checkpoint every N steps"),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run"),
    nproc: int = typer.Option(
        1, min=1, help="Training processes (torchrun + DDP); the batch is split between them"
    ),
) -> None:
    """Pretrain a base from scratch on your openly licensed documents, and register it as
    open-licensed-only with a manifest that proves it (compute: about 6 x parameters x tokens).

    Documents are admitted one by one: ai_training allowed, owned by you, under a licence that
    allows training and redistribution (CC-BY, MIT, Apache-2.0, CC0, share-alike, ...).
    NoDerivatives, custom and unknown licences are refused, each named with its reason.

    Example: viz models pretrain --name open-tiny --account ai2 --tag open --tokens 100000
    """
    settings = state(context).settings
    config = PretrainConfig(
        size=size,
        tokens=tokens,
        batch_size=batch_size,
        learning_rate=learning_rate,
        warmup_steps=warmup_steps,
        seed=seed,
        checkpoint_every=checkpoint_every,
    )
    # deferred: tqdm.auto probes for notebooks on import
    from tqdm.auto import tqdm

    bars: list[Any] = []  # made at the first step, so its ETA leaves out the tokenizer's time

    def progress(step: int, steps: int, loss: float, tokens_per_second: float) -> None:
        if not bars:
            bars.append(tqdm(total=steps, initial=step - 1, desc=name, unit="step"))
        bars[0].update(1)
        bars[0].set_postfix(loss=f"{loss:.3f}", tok_s=f"{tokens_per_second:.0f}")

    try:
        done = pretrain_from_documents(
            state(context).engine(),
            name=name,
            account=account,
            config=config,
            blobs_dir=settings.blobs_dir,
            models_dir=settings.models_dir,
            document_ids=documents,
            owners=owner,
            tags=tag,
            held_out=held_out,
            licence=licence,
            resume=resume,
            nproc=nproc,
            progress=progress,
            say=lambda line: typer.echo(line, err=True),
        )
    finally:
        for bar in bars:
            bar.close()
    if done is None:
        return  # a torchrun worker other than the main one
    m, record = done.manifest["metrics"], done.record
    typer.echo(
        f"registered {record.id}: {record.parameter_count:,} parameters, {record.licence}, "
        f"{record.provenance_class}; held-out perplexity {m['held_out_perplexity_initial']} -> "
        f"{m['held_out_perplexity']}, {m['tokens_per_second']:.0f} tokens/s, {m['seconds']} s"
    )
    typer.echo(f"manifest and card in {done.result.model_folder}")


@app.command("verify")
def verify(
    context: typer.Context,
    model_id: str = typer.Argument(..., help="Model id from viz models list"),
) -> None:
    """Re-check a base's provenance: its weights, tokenizer and every document of its manifest
    against the catalogue (sha256, licence, permission, owner). Exits 1 if anything is off.

    Example: viz models verify open-tiny
    """
    settings = state(context).settings
    with session(context) as database:
        record = get_base_model(database, model_id)
        if record.provenance_class != "open-licensed-only":
            typer.echo(
                f"{record.id} declares provenance {record.provenance_class!r}: nothing to verify "
                "(only bases pretrained by viz models pretrain carry a manifest)"
            )
            raise typer.Exit(1)
        report = verify_provenance(
            database,
            model_folder(record, settings.models_dir),
            blobs_dir=settings.blobs_dir,
            registered=record,
        )
    if not report.ok:
        typer.echo(f"{record.id}: provenance does NOT verify:", err=True)
        for problem in report.problems:
            typer.echo(f"- {problem}", err=True)
        raise typer.Exit(1)
    typer.echo(
        f"{record.id}: verified: {report.documents} documents ({report.tokens:,} tokens per "
        f"epoch) match the catalogue; weights sha256 {record.weights_sha256}; licence "
        f"{report.licence}"
    )


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"
