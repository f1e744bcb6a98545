"""`viz eval`: experiment grids with reports (the RAG / retrieve-and-rerank grid of seed 003)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import typer

from viz.cli._context import state
from viz.errors import InvalidInput

app = typer.Typer(
    help="Experiments: score pipelines on question sets and write reports.\n\n"
    "Example: viz eval rag --sample 20"
)

DEFAULT_DATA = Path("../shared/data/qasper-dev")


@app.command("rag")
def rag(
    context: typer.Context,
    data: Path = typer.Option(
        DEFAULT_DATA, help="A QASPER-format folder: questions.json and papers/<paper_id>.txt"
    ),
    out: Path | None = typer.Option(
        None, help="Report folder (default VIZ_HOME/eval/rag); a rerun resumes there"
    ),
    sample: int | None = typer.Option(None, help="Only N questions, drawn with --seed"),
    seed: int = typer.Option(0, help="Seed of the sample"),
    chunk_sizes: str = typer.Option("800,1200,1600", help="Chunk sizes in characters"),
    top_k: str = typer.Option("3,5,7", help="Sources given to the model"),
    candidates: str = typer.Option("10,20,50", help="Candidates reranked (rar cells)"),
    first_stage: str = typer.Option("hybrid", help="lexical | dense | hybrid"),
    reranker: str = typer.Option("default", help="Trained reranker name, folder, or 'llm'"),
    model: str | None = typer.Option(None, "--model", "-m", help="Base model id"),
    max_tokens: int = typer.Option(64, help="Most tokens per answer"),
) -> None:
    """Run the seed-003 grid — vanilla, RAG (chunk size x top-k) and retrieve-and-rerank
    (chunk size x candidates x top-k) — and write report.md, report.html, PNG plots,
    results.json and results.csv. Answers are saved as they come: rerun to resume.

    Example: viz eval rag --sample 20 --out bench/results/rag-grid
    """
    from tqdm.auto import tqdm

    from viz.api import load_base, load_embedder_cached, load_reranker_cached
    from viz.eval.rag import GridSettings, run_rag_eval

    settings = state(context).settings
    grid = GridSettings(
        chunk_sizes=_numbers(chunk_sizes, "--chunk-sizes"),
        top_ks=_numbers(top_k, "--top-k"),
        candidates=_numbers(candidates, "--candidates"),
        first_stage=first_stage,
        max_tokens=max_tokens,
    )
    grid.check()
    if not (data / "questions.json").is_file():
        raise InvalidInput(f"{data} has no questions.json; pass --data with a QASPER-format folder")
    llm = load_base(model, settings=settings)
    scorer = load_reranker_cached(reranker, settings, llm)
    folder = out or settings.home / "eval" / "rag"
    with tqdm(desc="eval rag", unit=" answers") as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        cells, files = run_rag_eval(
            data,
            folder,
            llm=llm,
            embedder=load_embedder_cached(),
            reranker=scorer,
            settings=grid,
            sample=sample,
            seed=seed,
            meta={
                "model": llm.model_id,
                "reranker": getattr(scorer, "name", reranker),
                "command": "viz " + " ".join(sys.argv[1:]),
                "date": time.strftime("%Y-%m-%d"),
            },
            progress=progress,
            index_dir=settings.home / "eval" / "rag-index",
        )
    best = max((c for c in cells if c["f1"] is not None), key=lambda c: c["f1"])
    typer.echo(f"{len(cells)} cells; best F1 {best['f1']:.3f} ({best['cell']})")
    typer.echo(f"report: {files['report.md']} and {files['report.html']}")


def _numbers(text: str, option: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as error:
        raise InvalidInput(f"{option} {text!r} must be integers such as 3,5,7") from error
    if not values or any(v < 1 for v in values):
        raise InvalidInput(f"{option} {text!r} must be positive integers such as 3,5,7")
    return values
