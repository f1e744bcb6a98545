"""`viz eval`: experiment grids with reports (the RAG / retrieve-and-rerank grid of seed 003)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import typer
from tqdm.auto import tqdm

from viz.api import load_base, load_embedder_cached, load_reranker_cached
from viz.cli._context import state
from viz.errors import InvalidInput
from viz.eval.rag import GridSettings, run_rag_eval
from viz.eval.routing import build_hierarchy, english_texts, evaluate_routing, plan_hierarchy
from viz.models.precision import native_bf16
from viz.training.reader import reader_folder, with_reader

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
    methods: str = typer.Option("vanilla,rag,rar", help="Which cells run: vanilla, rag, rar"),
    reader: str | None = typer.Option(
        None,
        help="A reader adapter merged into the base: its name in VIZ_HOME/adapters or a folder",
    ),
    precision: str = typer.Option(
        "auto",
        help="fp32 | bf16 | auto (bf16 where the CPU computes it natively: about 3x faster "
        "prompts on AMX; else fp32)",
    ),
) -> None:
    """Run the seed-003 grid — vanilla, RAG (chunk size x top-k) and retrieve-and-rerank
    (chunk size x candidates x top-k) — and write report.md, report.html, PNG plots,
    results.json and results.csv. Answers are saved as they come: rerun to resume.

    Example: viz eval rag --sample 20 --out bench/results/rag-grid

    The grounded reader against the base on the best cells:

    Example: viz eval rag --sample 100 --methods rar --chunk-sizes 1600 --top-k 7 --candidates 50
    --reader reader
    """
    settings = state(context).settings
    grid = GridSettings(
        chunk_sizes=_numbers(chunk_sizes, "--chunk-sizes"),
        top_ks=_numbers(top_k, "--top-k"),
        candidates=_numbers(candidates, "--candidates"),
        first_stage=first_stage,
        max_tokens=max_tokens,
        methods=tuple(m.strip() for m in methods.split(",") if m.strip()),
    )
    grid.check()
    if not (data / "questions.json").is_file():
        raise InvalidInput(f"{data} has no questions.json; pass --data with a QASPER-format folder")
    if precision not in ("fp32", "bf16", "auto"):
        raise InvalidInput(f"--precision {precision!r} is not fp32, bf16 or auto")
    if precision == "auto":
        precision = "bf16" if native_bf16() else "fp32"
    llm = load_base(model, precision=precision, settings=settings)
    scorer = load_reranker_cached(reranker, settings, llm)
    if reader not in (None, "none"):  # after the reranker: an llm reranker scores with the base
        llm = with_reader(llm, reader_folder(settings.adapters_dir, str(reader)))
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
                "precision": precision,
                "command": "viz " + " ".join(sys.argv[1:]),
                "date": time.strftime("%Y-%m-%d"),
            },
            progress=progress,
            index_dir=settings.home / "eval" / "rag-index",
        )
    best = max((c for c in cells if c["f1"] is not None), key=lambda c: c["f1"])
    typer.echo(f"{len(cells)} cells; best F1 {best['f1']:.3f} ({best['cell']})")
    typer.echo(f"report: {files['report.md']} and {files['report.html']}")


@app.command("routing")
def routing(
    context: typer.Context,
    train: Path = typer.Option(
        DEFAULT_DATA.parent / "qasper-train", help="QASPER-format folder the adapters train on"
    ),
    data: Path = typer.Option(DEFAULT_DATA, help="QASPER-format folder of the queries"),
    shared: Path = typer.Option(
        DEFAULT_DATA.parent.parent, help="The shared folder (its seeds/ train 'english')"
    ),
    out: Path | None = typer.Option(None, help="Report folder (default VIZ_HOME/eval/routing)"),
    steps: int = typer.Option(40, help="Training steps per adapter"),
    papers: int = typer.Option(12, help="Training papers per sub-domain adapter"),
    domain_papers: int = typer.Option(16, help="Training papers of the nlp-research adapter"),
    quality_questions: int = typer.Option(40, help="Questions scored for answer quality"),
    max_tokens: int = typer.Option(32, help="Most tokens per answer"),
    build: bool = typer.Option(True, help="Build (or finish building) the hierarchy first"),
    seed: int = typer.Option(0, help="Seed of the paper and question samples"),
) -> None:
    """Build a QASPER hierarchy (english -> nlp-research -> translation, question-answering,
    sentiment, dialogue) in VIZ_HOME, route held-out QASPER-dev questions through it and score
    routing accuracy (hierarchical vs flat vs random) and answer quality (auto vs base vs a
    wrong sub-domain). Writes report.md and results.json; a rerun skips what is built.

    Example: viz --home .viz-routing eval routing --out bench/results/routing
    """
    # deferred: the eval modules would add ~0.3 s to every viz command
    from viz.api import load_embedder_cached

    settings = state(context).settings
    for folder in (train, data):
        if not (folder / "questions.json").is_file():
            raise InvalidInput(f"{folder} has no questions.json; pass a QASPER-format folder")
    english = english_texts(shared)
    plan = plan_hierarchy(
        train, data, english, papers_per_subdomain=papers, domain_papers=domain_papers, seed=seed
    )
    say = lambda text: typer.echo(text, err=True)  # noqa: E731
    if build:
        build_hierarchy(settings, plan, embedder=load_embedder_cached(), steps=steps, say=say)
    folder = out or settings.home / "eval" / "routing"
    results = evaluate_routing(
        settings,
        plan,
        folder,
        embedder=load_embedder_cached(),
        quality_questions=quality_questions,
        max_tokens=max_tokens,
        seed=seed,
        say=say,
    )
    accuracy = results["accuracy"]
    typer.echo(
        f"top-1 routing accuracy on {results['queries']} queries: hierarchical "
        f"{accuracy['hierarchical']:.3f}, flat {accuracy['flat']:.3f}, random "
        f"{accuracy['random']:.3f}"
    )
    for name, row in results["quality"].items():
        typer.echo(f"{name}: perplexity {row['perplexity']:.2f}, token F1 {row['token_f1']:.3f}")
    typer.echo(f"report: {folder / 'report.md'}")


def _numbers(text: str, option: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as error:
        raise InvalidInput(f"{option} {text!r} must be integers such as 3,5,7") from error
    if not values or any(v < 1 for v in values):
        raise InvalidInput(f"{option} {text!r} must be positive integers such as 3,5,7")
    return values
