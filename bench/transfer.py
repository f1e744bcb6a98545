"""Downstream transfer benchmark: a sub-domain child trained from scratch vs from its parent chain.

    python bench/transfer.py                  # ~25 min on 2 CPU cores; needs the routing
                                              # hierarchy in .viz-routing (viz eval routing)
    python bench/transfer.py --steps 10       # quicker, noisier

The parent chain is the routing evaluation's `english` -> `nlp-research` (bf16 LoRA, 40 steps).
A `translation` child is trained on the same 10 QASPER-train papers about machine translation,
at equal steps, four ways (`viz.training.transfer`): from the base (`scratch`), as a copy of
`nlp-research` (`init`), on top of the merged chain (`on-top`), and with KL to the chain
(`distil`). Each is scored as it would be served, on held-out translation papers (perplexity)
and on QASPER-dev questions about translation papers, closed book: reference-answer perplexity
and token F1 of a greedy answer. Writes bench/results/transfer/{report.md,results.json}.

Back of the envelope: 30 steps x 4 windows of 128 tokens see ~15k tokens, a fraction of the 10
papers, so the child's start matters: `init` and `on-top` begin where the parent chain already
is (held-out perplexity ~10-20% under the base), `scratch` at the base. Expect the transfers to
end lower than scratch at equal steps, `on-top` lowest when served with its chain.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from viz.config import Settings  # noqa: E402

CHILD = "translation"
KINDS = ["scratch", "init", "on-top", "distil"]
QUESTIONS, F1_QUESTIONS = 40, 16


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog="example: python bench/transfer.py"
    )
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--routing-home", type=Path, default=REPO / ".viz-routing")
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "transfer")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from transformers import AutoTokenizer

    from viz.accounts import get_account
    from viz.eval.routing import CREATOR
    from viz.models import get_base_model
    from viz.models.loading import ensure_cached
    from viz.store import open_database, session_scope
    from viz.training import TrainingConfig, build_training_set, select_documents, train_adapter
    from viz.training.transfer import transfer_start

    settings = Settings(home=args.routing_home)
    chain = [settings.adapters_dir / "english", settings.adapters_dir / "nlp-research"]
    if not all((folder / "adapter_model.safetensors").is_file() for folder in chain):
        sys.exit(f"no routing hierarchy in {args.routing_home}: run viz eval routing first")
    engine = open_database(settings.database_url_resolved)
    with session_scope(engine) as session:
        owner = get_account(session, CREATOR)
        documents = select_documents(session, owner, tags=[CHILD])
        base = get_base_model(session, settings.default_base_model)
        session.expunge(base)
    folder = ensure_cached(base, settings.models_dir)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    config = TrainingConfig(
        method="lora",
        base_precision="bf16",
        steps=args.steps,
        batch_size=4,
        sequence_length=128,
        overlap=16,
        learning_rate=1e-3,
        held_out_fraction=0.2,
        checkpoint_every=10_000,
    )
    training_set = build_training_set(
        documents,
        settings.blobs_dir,
        tokenizer,
        sequence_length=128,
        overlap=16,
        held_out_fraction=0.2,
        context_length=8192,
    )
    held_out = training_set.held_out_windows()
    held_out = [held_out[i * len(held_out) // 48] for i in range(min(48, len(held_out)))]
    scratch_dir = Path(args.out.parent / ".transfer-adapters")
    shutil.rmtree(scratch_dir, ignore_errors=True)
    children, seconds = {}, {}
    for kind in KINDS:
        print(f"training the {CHILD} child: {kind} ...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        result = train_adapter(
            name=f"child-{kind}",
            account=CREATOR,
            base=base,
            base_folder=folder,
            training_set=training_set,
            config=config,
            adapters_dir=scratch_dir,
            tokenizer=tokenizer,
            show_progress=False,
            start=transfer_start(kind, chain, base_folder=folder, precision="bf16"),
        )
        children[kind], seconds[kind] = result.folder, time.perf_counter() - started

    questions = translation_questions(args.shared)
    served = {  # name -> (chain weights merged into the base, child folder or None)
        "base": ([], None),
        "parent chain (0.5 / 1)": ([0.5, 1.0], None),
        "scratch, alone": ([], children["scratch"]),
        "scratch after the chain (0.25 / 0.5 / 1)": ([0.25, 0.5], children["scratch"]),
        "init (copy of nlp-research), alone": ([], children["init"]),
        "on-top, after the chain (1 / 1 / 1)": ([1.0, 1.0], children["on-top"]),
        "distil, alone": ([], children["distil"]),
    }
    rows = {}
    for name, (weights, child) in served.items():
        print(f"scoring {name} ...", file=sys.stderr, flush=True)
        rows[name] = score(folder, chain, weights, child, tokenizer, held_out, questions)
    results = {
        "settings": {"child": CHILD, "steps": args.steps, "papers": len(documents)},
        "train_seconds": seconds,
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    write_report(results, args.out)
    shutil.rmtree(scratch_dir, ignore_errors=True)
    print((args.out / "report.md").read_text())


def translation_questions(shared: Path) -> list[tuple[str, str, list[dict[str, Any]]]]:
    """(question, reference answer, all answers) of QASPER-dev papers about translation."""
    from viz.datasets.qasper import load_questions
    from viz.eval.metrics import reference_text
    from viz.eval.routing import subdomain_of

    found = []
    for question in load_questions(shared / "data" / "qasper-dev"):
        if subdomain_of(question.paper_title) != CHILD:
            continue
        references = [reference_text(a) for a in question.answers]
        reference = next((r for r in references if r and len(r) < 300), None)
        if reference:
            found.append((question.question, reference, question.answers))
    return found[:QUESTIONS]


def score(
    folder: Path,
    chain: list[Path],
    weights: list[float],
    child: Path | None,
    tokenizer: Any,
    held_out: list[tuple[int, ...]],
    questions: list[tuple[str, str, list[dict[str, Any]]]],
) -> dict[str, float]:
    import torch

    from viz.eval.metrics import answer_scores
    from viz.models.loading import load_folder
    from viz.training.adapters import load_adapter
    from viz.training.evaluate import perplexity
    from viz.training.transfer import chain_deltas, merge_chain

    model = load_folder(folder, "fp32")
    if weights:
        merge_chain(model, chain_deltas(chain[: len(weights)], weights))
    if child is not None:
        model = load_adapter(child, model)
    total, tokens, f1s = 0.0, 0, []
    for number, (question, reference, answers) in enumerate(questions):
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False
        )
        prompt_ids = tokenizer(prompt, add_special_tokens=False).input_ids
        answer_ids = tokenizer(reference, add_special_tokens=False).input_ids
        ids = torch.tensor([prompt_ids + answer_ids])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, len(prompt_ids) - 1 : -1].float()
            total += float(
                torch.nn.functional.cross_entropy(logits, torch.tensor(answer_ids), reduction="sum")
            )
            tokens += len(answer_ids)
            if number < F1_QUESTIONS:
                out = model.generate(
                    torch.tensor([prompt_ids]), max_new_tokens=32, do_sample=False
                )[0, len(prompt_ids) :]
                f1s.append(
                    answer_scores(tokenizer.decode(out, skip_special_tokens=True), answers)[1]
                )
    return {
        "held_out_perplexity": perplexity(model, held_out),
        "answer_perplexity": math.exp(total / tokens),
        "token_f1": sum(f1s) / len(f1s),
    }


def write_report(results: dict[str, Any], out: Path) -> None:
    rows = results["rows"]
    scratch = rows["scratch, alone"]
    settings = results["settings"]
    lines = [
        "# Downstream transfer: a sub-domain child from scratch vs from its parent chain",
        "",
        f"Child: `{settings['child']}`, bf16 LoRA rank 8 on {settings['papers']} QASPER-train "
        f"papers (20% held out), {settings['steps']} steps of 4 x 128 tokens at lr 1e-3, four "
        "ways. Parent chain: `english` -> `nlp-research` from the routing evaluation. Scored as "
        "served: held-out perplexity on the child's held-out papers; closed-book "
        f"reference-answer perplexity on {QUESTIONS} QASPER-dev questions about translation "
        f"papers and token F1 of a greedy 32-token answer on {F1_QUESTIONS} of them.",
        "",
        "| served as | held-out ppl | vs scratch | answer ppl | vs scratch | token F1 |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        lines.append(
            f"| {name} | {row['held_out_perplexity']:.2f} "
            f"| {row['held_out_perplexity'] / scratch['held_out_perplexity']:.3f} "
            f"| {row['answer_perplexity']:.1f} "
            f"| {row['answer_perplexity'] / scratch['answer_perplexity']:.3f} "
            f"| {row['token_f1']:.3f} |"
        )
    lines += [
        "",
        "Training time (s): "
        + ", ".join(f"{k} {v:.0f}" for k, v in results["train_seconds"].items()),
        "",
    ]
    (out / "report.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
