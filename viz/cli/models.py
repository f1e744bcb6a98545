"""`viz models`: the base-model registry and memory per precision variant."""

from __future__ import annotations

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
from viz.models.loading import ensure_cached, load_folder

app = typer.Typer(
    help="Base models: list, show (licence, provenance, memory), add.\n\n"
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


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"
