"""`viz adapters train-reader`: the grounded reader adapter (`viz.training.reader`)."""

from __future__ import annotations

from pathlib import Path

import typer

from viz.cli._context import session, state
from viz.errors import InvalidInput
from viz.models import get_base_model
from viz.models.loading import ensure_cached
from viz.training.config import check_adapter_name
from viz.training.reader import ReaderConfig, reader_examples, train_reader

READER_LICENCE = "CC-BY-4.0"


def train_reader_command(
    context: typer.Context,
    data: Path = typer.Option(
        ..., help="A QASPER-format folder: questions.json and papers/<paper_id>.txt"
    ),
    name: str = typer.Option("reader", help="Adapter name (its folder in VIZ_HOME/adapters)"),
    base: str | None = typer.Option(None, help="Base model id (default: the configured one)"),
    steps: int = typer.Option(300, help="Optimizer steps"),
    batch_size: int = typer.Option(4, help="Examples per step"),
    learning_rate: float = typer.Option(5e-4, help="AdamW learning rate"),
    rank: int = typer.Option(16, help="LoRA rank"),
    limit: int | None = typer.Option(None, help="Use at most N questions"),
    seed: int = typer.Option(0, help="Seed of the examples and the LoRA initialisation"),
) -> None:
    """Train the grounded reader: answers from numbered sources, briefly, citing them as [n],
    ending on their own, or "I can't find this in the sources." when they lack the answer.
    Publish it like any adapter (viz market publish); viz ask --reader and viz eval rag
    --reader use it.

    Example: viz adapters train-reader --data ../shared/data/qasper-train --steps 300
    """
    # deferred: tqdm.auto probes for notebooks on import
    from tqdm.auto import tqdm

    settings = state(context).settings
    check_adapter_name(name)
    out = settings.adapters_dir / name
    if out.exists():
        raise InvalidInput(f"adapter {name!r} exists at {out}; choose another --name")
    if not (data / "questions.json").is_file():
        raise InvalidInput(f"{data} has no questions.json; pass --data with a QASPER-format folder")
    config = ReaderConfig(
        steps=steps, batch_size=batch_size, learning_rate=learning_rate, rank=rank, seed=seed
    )
    config.check()
    examples = reader_examples(data, limit=limit, seed=seed)
    with session(context) as database:
        record = get_base_model(database, base or settings.default_base_model)
    base_folder = ensure_cached(record, settings.models_dir)
    grounded = sum(e.grounded for e in examples)
    typer.echo(
        f"training reader {name!r} on {record.id}: {len(examples)} examples from {data} "
        f'({grounded} grounded, {len(examples) - grounded} "can\'t find"), {steps} steps'
    )
    with tqdm(total=steps, desc=f"training {name}", unit="step") as bar:

        def progress(step: int, loss: float) -> None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}")

        manifest = train_reader(
            base_folder,
            examples,
            out,
            config,
            base={"id": record.id, "weights_sha256": record.weights_sha256},
            provenance={
                "dataset": str(data),
                "licence": READER_LICENCE,
                "attribution": "Dasigi et al. 2021, QASPER (AI2), CC BY 4.0",
                "questions": len(examples),
            },
            progress=progress,
        )
    metrics = manifest["metrics"]
    typer.echo(
        f"reader written to {out} (train loss {metrics['train_loss_first']:.3f} -> "
        f"{metrics['train_loss_last']:.3f}, {metrics['seconds']:.0f} s); publish it with:\n"
        f"  viz market publish {out} --account viz --name {name} --version 1.0.0 "
        f"--licence {READER_LICENCE} --price-in 10 --price-out 50"
    )
