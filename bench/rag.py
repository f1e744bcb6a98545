"""Benchmark: retrieval and reranking on QASPER dev.

Measures, in one process (no time or score is asserted):

1. index build: chunks per second into a collection (chunking + MiniLM embedding + FTS5 and
   the vector file), for the papers of the sampled questions;
2. first stage, per question limited to its own paper (as `viz eval rag` does): BM25 (FTS5),
   dense (MiniLM cosine) and hybrid (RRF), recall@5, MRR and nDCG@10 against gold chunks;
3. reranking the hybrid top `--candidates` with each reranker given (the trained cross-encoder,
   and `llm`: pointwise scoring with the base model on `--llm-questions` questions, it is slow);
   ratios against BM25 in the same run (goal: the default pipeline >= 1.15x BM25 recall@5);
4. rerank latency for 50 candidates on this CPU: p50 / p90 (goal <= 150 ms).

Anchors from the literature (another corpus, for scale only): BEIR SciFact nDCG@10 BM25 0.665,
BM25 + MiniLM cross-encoder 0.688.

Example:

    .venv/bin/python bench/rag.py --home .viz-bench --questions 300
    .venv/bin/python bench/rag.py --reranker minilm-qasper --reranker llm --llm-questions 40
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from viz.datasets.qasper import (  # noqa: E402
    evidence_spans,
    is_gold,
    load_questions,
    paper_text,
    sample_questions,
)
from viz.errors import NotFound  # noqa: E402
from viz.eval.metrics import mean, mrr, ndcg_at_k, recall_at_k  # noqa: E402
from viz.rag.collection import CollectionSettings, SourceDocument, create_collection  # noqa: E402
from viz.rag.embed import load_embedder  # noqa: E402
from viz.rag.rerank import load_reranker, rerank  # noqa: E402

SCIFACT = {"BM25": 0.665, "BM25 + MiniLM cross-encoder": 0.688}
FIRST_STAGES = ("lexical", "dense", "hybrid")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/qasper-dev"))
    parser.add_argument("--home", type=Path, default=Path(os.environ.get("VIZ_HOME", ".viz")))
    parser.add_argument("--questions", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--chunk-chars", type=int, default=1200)
    parser.add_argument("--candidates", type=int, default=20)
    parser.add_argument("--reranker", action="append", default=None)
    parser.add_argument("--llm-questions", type=int, default=30)
    args = parser.parse_args()
    rerankers = args.reranker or ["minilm-qasper", "llm"]

    import torch

    print(
        f"# bench/rag.py — {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads, {args.data}"
    )
    questions = sample_questions(load_questions(args.data), args.questions, seed=args.seed)
    papers = sorted({q.paper_id for q in questions})
    embedder = load_embedder()

    folder = Path(tempfile.mkdtemp()) / "bench"
    collection = create_collection(folder, CollectionSettings("chars", args.chunk_chars, 0))
    documents = [SourceDocument(f"p:{p}", p, paper_text(args.data, p)) for p in papers]
    started = time.perf_counter()
    report = collection.add(documents, embedder)
    seconds = time.perf_counter() - started
    print(
        f"\n## index build: {len(papers)} papers, {report.chunks} chunks of "
        f"{args.chunk_chars} chars in {seconds:.1f} s = {report.chunks / seconds:.1f} chunks/s"
    )

    scorers = {}
    for name in rerankers:
        llm = None
        if name == "llm":
            from viz.api import load_base

            llm = load_base()
        try:
            scorers[name] = load_reranker(name, args.home, llm=llm)
        except NotFound as error:
            print(f"skipped reranker {name}: {error.message}")

    rows: dict[str, list[tuple[float, float, float]]] = {}
    latency: dict[str, list[float]] = {name: [] for name in scorers}
    judged = 0
    for number, question in enumerate(questions):
        key = f"p:{question.paper_id}"
        spans = evidence_spans(paper_text(args.data, question.paper_id), question)
        chunks = collection.chunks(key)
        gold = {c.id for c in chunks if is_gold(c.start, c.end, spans)}
        if not gold:
            continue
        judged += 1
        depth = min(50, len(chunks))
        first = {}
        for mode in FIRST_STAGES:
            hits = collection.search(
                question.question, k=depth, mode=mode, embedder=embedder, keys=[key]
            )
            first[mode] = hits
            _score(rows, mode, [h.chunk.id for h in hits], gold)
        for name, scorer in scorers.items():
            if name == "llm" and number >= args.llm_questions:
                continue
            candidates = first["hybrid"][: args.candidates]
            reranked = rerank(scorer, question.question, candidates, len(candidates))
            label = f"hybrid -> {name} (top {args.candidates})"
            _score(rows, label, [h.chunk.id for h in reranked], gold)
            if name == "llm":  # the same questions' first stage, for a fair ratio
                _score(rows, "hybrid (llm's questions)", [h.chunk.id for h in candidates], gold)
            fifty = first["hybrid"][:50]
            if len(fifty) == 50 and len(latency[name]) < (5 if name == "llm" else 40):
                started = time.perf_counter()
                rerank(scorer, question.question, fifty, 50)
                latency[name].append((time.perf_counter() - started) * 1e3)

    bm25 = mean(r[0] for r in rows["lexical"]) or 1e-9
    print(
        f"\n## retrieval: {judged} questions with gold evidence in the text "
        f"(of {len(questions)} sampled), each searched within its own paper"
    )
    print(f"{'pipeline':44} {'n':>4} {'recall@5':>9} {'MRR':>6} {'nDCG@10':>8} {'R@5 / BM25':>11}")
    for label, values in rows.items():
        recall = mean(v[0] for v in values) or 0.0
        print(
            f"{label:44} {len(values):>4} {recall:>9.3f} {mean(v[1] for v in values):>6.3f} "
            f"{mean(v[2] for v in values):>8.3f} {recall / bm25:>10.2f}x"
        )
    print("\n## rerank latency, 50 candidates (p50 / p90 over up to 40 questions; llm: 5)")
    for name, values in latency.items():
        if values:
            values.sort()
            p90 = values[int(0.9 * (len(values) - 1))]
            print(f"{name:20} {statistics.median(values):8.0f} ms {p90:8.0f} ms  (goal <= 150 ms)")
    print(
        "\nanchors (BEIR SciFact nDCG@10, another corpus): "
        + ", ".join(f"{k} {v}" for k, v in SCIFACT.items())
    )


def _score(
    rows: dict[str, list[tuple[float, float, float]]], label: str, ranked: list[int], gold: set[int]
) -> None:
    rows.setdefault(label, []).append(
        (
            recall_at_k(ranked, gold, 5) or 0.0,
            mrr(ranked, gold) or 0.0,
            ndcg_at_k(ranked, gold, 10) or 0.0,
        )
    )


if __name__ == "__main__":
    main()
