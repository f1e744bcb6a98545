"""Continual update benchmark: naive fine-tuning vs each forgetting guard, same data and steps.

    python bench/continual.py                 # ~25 min on 2 CPU cores (--resume after a stop)
    python bench/continual.py --steps 10      # quicker, noisier

Version 1 of an adapter is trained on QASPER papers about machine translation; version 2 is
trained from it, once per guard, on new documents of another kind: six excerpts of the chat
answers logged by a RAG experiment (seed 003: markdown answers to questions about ML papers).
Forgetting is the relative perplexity increase on held-out translation papers, gain the
relative decrease on held-out answer excerpts (`viz.training.continual`). Perplexities are
measured every few steps for the curves. Writes report.md, results.json and forgetting.png
to bench/results/continual/.

Back of the envelope: a rank-8 adapter has ~4.9 M weights, far fewer than the text it is
trained on, so a second domain should displace the first: naive forgetting of several percent
of perplexity. Replaying as many earlier windows as new ones halves the new data's share of
each batch, so expect much less forgetting and a somewhat smaller gain at equal steps.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from viz.config import Settings  # noqa: E402

GUARDS = ["naive", "replay", "l2", "ewc", "olora", "replay+ewc"]
EARLIER, NEW = "translation", "chat answers"
PAPERS = 6
V1_STEPS = 40
EXCERPT_BYTES = 12_000
GOAL_FORGETTING, GOAL_GAIN = 0.25, 0.80


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog="example: python bench/continual.py"
    )
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--every", type=int, default=10, help="steps between curve points")
    parser.add_argument("--guards", default=",".join(GUARDS))
    parser.add_argument("--home", type=Path, default=REPO / ".viz-bench" / "continual")
    parser.add_argument("--models", type=Path, default=REPO / ".viz-bench" / "models")
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "continual")
    parser.add_argument("--resume", action="store_true", help="keep guards already measured")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    world = setup(args)
    results: dict[str, Any] = {"settings": world["settings"], "runs": {}}
    saved = args.out / "results.json"
    if args.resume and saved.is_file():  # keep the guards an interrupted run finished
        previous = json.loads(saved.read_text())
        if previous["settings"] == results["settings"]:
            results["runs"] = previous["runs"]
    args.out.mkdir(parents=True, exist_ok=True)
    for guard in args.guards.split(","):
        if guard in results["runs"]:
            continue
        print(f"update with guard {guard} ...", file=sys.stderr, flush=True)
        results["runs"][guard] = update(world, guard, args)
        saved.write_text(json.dumps(results, indent=2))
    write_report(results, args.out)
    print((args.out / "report.md").read_text())


def setup(args: argparse.Namespace) -> dict[str, Any]:
    """A home with the two sets of papers and version 1 trained on the earlier ones."""
    from viz.accounts import create_account, get_account
    from viz.documents import DocumentInput, add_documents
    from viz.errors import NotFound
    from viz.eval.routing import english_texts, plan_hierarchy
    from viz.store import open_database, session_scope
    from viz.training import TrainingConfig
    from viz.training.recipe import train_from_documents

    settings = Settings(home=args.home)
    engine = open_database(settings.database_url_resolved)
    data = args.shared / "data"
    plan = plan_hierarchy(data / "qasper-train", data / "qasper-dev", english_texts(args.shared))
    documents = {}
    with session_scope(engine) as session:
        try:
            account = get_account(session, "bench")
        except NotFound:
            account = create_account(session, "bench")
        sources = {EARLIER: list(plan.subdomains[EARLIER][:PAPERS]), NEW: excerpts(args)}
        for group, paths in sources.items():
            added, known = add_documents(
                session,
                settings.blobs_dir,
                account,
                paths,
                DocumentInput("CC-BY-4.0", tags=(group.replace(" ", "-"),)),
                document_bytes_max=10**8,
                documents_max=PAPERS,
                skip_existing=True,
            )
            documents[group] = [d.id for d in added + known]
    config = TrainingConfig(
        method="lora",
        base_precision="bf16",
        steps=V1_STEPS,
        batch_size=4,
        sequence_length=128,
        overlap=16,
        learning_rate=1e-3,
        held_out_fraction=0.34,
        checkpoint_every=1000,
    )
    if not (settings.adapters_dir / "papers-v1").exists():
        print(f"training version 1 on {EARLIER} papers ...", file=sys.stderr, flush=True)
        train_from_documents(
            engine,
            name="papers-v1",
            account="bench",
            base=settings.default_base_model,
            config=config,
            blobs_dir=settings.blobs_dir,
            models_dir=args.models,
            adapters_dir=settings.adapters_dir,
            document_ids=documents[EARLIER],
        )
    return {
        "settings": {
            "earlier": EARLIER,
            "new": NEW,
            "papers_each": PAPERS,
            "steps": args.steps,
            "version_1_steps": V1_STEPS,
            "batch_size": config.batch_size,
            "sequence_length": config.sequence_length,
            "learning_rate": config.learning_rate,
            "method": "lora bf16, rank 8",
        },
        "config": config,
        "engine": engine,
        "blobs": settings.blobs_dir,
        "adapters": settings.adapters_dir,
        "new": documents[NEW],
    }


def excerpts(args: argparse.Namespace) -> list[Path]:
    """PAPERS evenly spaced excerpts of seed 003, each cut at line ends, as files."""
    text = (args.shared / "seeds" / "003_74421d9e1666aa75.txt").read_text()
    folder = args.home / "excerpts"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for number in range(PAPERS):
        start = text.index("\n", number * len(text) // PAPERS) + 1
        end = text.index("\n", start + EXCERPT_BYTES)
        path = folder / f"rag-answers-{number + 1}.txt"
        path.write_text(text[start:end])
        paths.append(path)
    return paths


def update(world: dict[str, Any], guard_name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Version 2 from version 1 under one guard, as `viz adapters update` trains it."""
    import shutil

    from viz.training.continual import continual_report, parse_guard
    from viz.training.evaluate import perplexity
    from viz.training.recipe import update_from_documents

    guard = parse_guard(guard_name)
    curve: list[dict[str, float]] = []
    step = [0]

    def watch(model: Any, evaluations: Any) -> None:
        step[0] += 1
        if step[0] % args.every == 0 and step[0] < args.steps:
            curve.append(
                {
                    "step": step[0],
                    "earlier": perplexity(model, evaluations["earlier"]),
                    "new": perplexity(model, evaluations["new"]),
                }
            )

    name = f"papers-v2-{guard.name.replace('+', '-')}"
    shutil.rmtree(world["adapters"] / name, ignore_errors=True)
    started = time.perf_counter()
    result = update_from_documents(
        world["engine"],
        previous="papers-v1",
        name=name,
        guard=guard,
        blobs_dir=world["blobs"],
        models_dir=args.models,
        adapters_dir=world["adapters"],
        document_ids=world["new"],
        steps=args.steps,
        batch_size=world["config"].batch_size,
        learning_rate=world["config"].learning_rate,
        held_out_fraction=world["config"].held_out_fraction,
        show_progress=False,
        watch=watch,
    )
    seconds = time.perf_counter() - started
    report = continual_report(result.manifest)
    curve.insert(0, {"step": 0, "earlier": report.earlier_before, "new": report.new_before})
    curve.append({"step": args.steps, "earlier": report.earlier_after, "new": report.new_after})
    shutil.rmtree(result.folder, ignore_errors=True)
    row = {
        "guard": guard.as_dict(),
        "forgetting": report.forgetting,
        "gain": report.gain,
        "earlier_before": report.earlier_before,
        "earlier_after": report.earlier_after,
        "new_before": report.new_before,
        "new_after": report.new_after,
        "replay_windows": result.manifest["start"]["replay_windows"],
        "seconds": seconds,
        "curve": curve,
    }
    print(
        f"  {guard.name}: forgetting {report.forgetting:+.1%}, gain {report.gain:+.1%}, "
        f"{seconds:.0f} s",
        file=sys.stderr,
        flush=True,
    )
    return row


def write_report(results: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = results["runs"]
    naive = runs.get("naive")
    settings = results["settings"]
    lines = [
        "# Continual update: forgetting vs gain",
        "",
        f"Version 1: LoRA ({settings['method']}) on {settings['papers_each']} QASPER papers "
        f"about {settings['earlier']}, {settings['version_1_steps']} steps. Version 2: trained "
        f"from version 1 on {settings['papers_each']} excerpts of {settings['new']}, "
        f"{settings['steps']} steps "
        f"of {settings['batch_size']} x {settings['sequence_length']} tokens at lr "
        f"{settings['learning_rate']}, once per guard. Forgetting: relative perplexity "
        f"increase on held-out {settings['earlier']} papers; gain: relative decrease on "
        f"held-out {settings['new']} excerpts. Goal for the default guard: forgetting <= "
        f"{GOAL_FORGETTING:.0%} of naive's while keeping >= {GOAL_GAIN:.0%} of its gain.",
        "",
        "| guard | earlier ppl before -> after | forgetting | new ppl before -> after | gain "
        "| forgetting / naive | gain / naive | goal | s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, run in runs.items():
        ratio_f = run["forgetting"] / naive["forgetting"] if naive and naive["forgetting"] else None
        ratio_g = run["gain"] / naive["gain"] if naive and naive["gain"] else None
        goal = (
            "yes"
            if ratio_f is not None
            and ratio_g is not None
            and ratio_f <= GOAL_FORGETTING
            and ratio_g >= GOAL_GAIN
            else "no"
        )
        lines.append(
            f"| {name} | {run['earlier_before']:.2f} -> {run['earlier_after']:.2f} "
            f"| {run['forgetting']:+.1%} | {run['new_before']:.2f} -> {run['new_after']:.2f} "
            f"| {run['gain']:+.1%} | {_ratio(ratio_f)} | {_ratio(ratio_g)} | {goal} "
            f"| {run['seconds']:.0f} |"
        )
    lines += ["", "![forgetting curves](forgetting.png)", ""]
    (out / "report.md").write_text("\n".join(lines))

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for name, run in runs.items():
        steps = [point["step"] for point in run["curve"]]
        left.plot(steps, [p["earlier"] for p in run["curve"]], marker="o", label=name)
        right.plot(steps, [p["new"] for p in run["curve"]], marker="o", label=name)
    left.set_title(f"earlier documents ({settings['earlier']}): forgetting")
    right.set_title(f"new documents ({settings['new']}): gain")
    for axis in (left, right):
        axis.set_xlabel("update step")
        axis.set_ylabel("held-out perplexity")
        axis.grid(alpha=0.3)
    right.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(out / "forgetting.png", dpi=110)


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


if __name__ == "__main__":
    main()
