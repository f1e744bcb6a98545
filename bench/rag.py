"""Benchmark: retrieval and reranking on QASPER dev, every reranker variant on both CPU classes.

Measures (no time or score is asserted):

1. index build: chunks per second into a collection (chunking + MiniLM embedding + FTS5 and
   the vector file), for the papers of the sampled questions;
2. first stage, per question limited to its own paper (as `viz eval rag` does): BM25 (FTS5),
   dense (MiniLM cosine) and hybrid (RRF), recall@5, MRR and nDCG@10 against gold chunks;
3. each reranker variant `NAME[:PRECISION]` (a trained cross-encoder run as `auto`, `bf16`,
   `int8` or `fp32`; or `llm`, pointwise scoring with the base model on `--llm-questions`
   questions), in one child process per CPU mode: recall@5 of the hybrid top `--candidates`
   reranked (fused with the first stage, as the pipeline does) and its ratio to BM25 (goal:
   the default >= 1.15x), side by side with the latency of reranking 50 candidates, p50 / p90
   (goal <= 150 ms on 2 cores). Modes: `native` (this CPU as it is) and `avx2` (PyTorch, MKL,
   oneDNN and FBGEMM held to AVX2 kernels, no native bf16: the closest this machine gets to
   the CPU class without AVX-512).

Back of the envelope: a MiniLM layer (hidden 384, feed-forward 1536) costs ~3.5 MFLOP per token
in its linear layers, so 50 candidates x 256 tokens x 3 layers is ~136 GFLOP (~1 s on two AVX2
cores at ~70 GFLOP/s each in fp32), and 50 x 128 tokens x 1 layer is ~23 GFLOP (~170 ms): only
the smallest shape, with int8 or bf16 matmuls on top, gets under 150 ms.

Anchors from the literature (another corpus, for scale only): BEIR SciFact nDCG@10 BM25 0.665,
BM25 + MiniLM cross-encoder 0.688.

Example:

    .venv/bin/python bench/rag.py --home .viz-bench --questions 300
    .venv/bin/python bench/rag.py --reranker minilm-qasper:int8 --reranker llm --modes native
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from viz.datasets.qasper import (  # noqa: E402
    evidence_spans,
    is_gold,
    load_questions,
    paper_text,
    sample_questions,
)
from viz.errors import VizError  # noqa: E402
from viz.eval.metrics import mean, mrr, ndcg_at_k, recall_at_k  # noqa: E402
from viz.rag.search import Hit  # noqa: E402

SCIFACT = {"BM25": 0.665, "BM25 + MiniLM cross-encoder": 0.688}
FIRST_STAGES = ("lexical", "dense", "hybrid")
LATENCY_CANDIDATES = 50
MODES = {
    "native": {},
    "avx2": {
        "ATEN_CPU_CAPABILITY": "avx2",
        "MKL_ENABLE_INSTRUCTIONS": "AVX2",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "FBGEMM_ENABLE_INSTRUCTIONS": "AVX2",
        "VIZ_CPU_NATIVE_BF16": "0",
    },
}

Rows = dict[str, list[tuple[float, float, float]]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/qasper-dev"))
    parser.add_argument("--home", type=Path, default=Path(os.environ.get("VIZ_HOME", ".viz")))
    parser.add_argument("--questions", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--chunk-chars", type=int, default=1200)
    parser.add_argument("--candidates", type=int, default=20)
    parser.add_argument("--index", type=Path, help="keep the index here and reuse it next run")
    parser.add_argument("--reranker", action="append", default=None, help="NAME[:PRECISION]")
    parser.add_argument("--llm-questions", type=int, default=30)
    parser.add_argument("--latency-runs", type=int, default=40)
    parser.add_argument("--modes", default="native,avx2", help="comma-separated: native, avx2")
    parser.add_argument("--score", nargs=2, type=Path, help=argparse.SUPPRESS)  # child: IN OUT
    args = parser.parse_args()
    if args.score:
        _score_variants(*args.score)
        return
    variants = args.reranker or ["minilm-qasper", "llm"]
    modes = [m for m in args.modes.split(",") if m]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        parser.error(f"unknown modes {unknown}; choose from {', '.join(MODES)}")

    import torch

    print(
        f"# bench/rag.py — {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads, {args.data}, {args.questions} questions sampled"
    )
    first_stage = _first_stage(args)
    cases = {
        "home": str(args.home),
        "variants": variants,
        "llm_questions": args.llm_questions,
        "latency_runs": args.latency_runs,
        "recall": [[c.question, [h.chunk.text for h in c.candidates]] for c in first_stage.cases],
        "latency": first_stage.latency,
    }
    results = {mode: _run_child(mode, cases) for mode in modes}
    _report(first_stage, variants, results, args.candidates)


@dataclass
class Case:
    question: str
    candidates: list[Hit]  # the hybrid top `--candidates`
    gold: set[int]


@dataclass
class FirstStage:
    rows: Rows
    cases: list[Case]
    latency: list[list[Any]]  # [question, 50 texts] for the latency runs
    judged: int
    sampled: int


def _first_stage(args: argparse.Namespace) -> FirstStage:
    """Index the sampled questions' papers, score the first stages, keep the rerankers' input."""
    from viz.rag.collection import CollectionSettings, SourceDocument, create_collection
    from viz.rag.embed import load_embedder

    questions = sample_questions(load_questions(args.data), args.questions, seed=args.seed)
    papers = sorted({q.paper_id for q in questions})
    embedder = load_embedder()
    folder = args.index or Path(tempfile.mkdtemp()) / "bench"
    collection = create_collection(folder, CollectionSettings("chars", args.chunk_chars, 0))
    documents = [SourceDocument(f"p:{p}", p, paper_text(args.data, p)) for p in papers]
    started = time.perf_counter()
    report = collection.add(documents, embedder)  # embeds only papers not indexed yet
    seconds = time.perf_counter() - started
    print(
        f"\n## index build: {len(papers)} papers, {report.chunks} chunks of "
        f"{args.chunk_chars} chars in {seconds:.1f} s = {report.chunks / seconds:.1f} chunks/s"
        + (f" (the rest already in {folder})" if args.index else "")
    )
    rows: Rows = {}
    cases, latency = [], []
    for question in questions:
        key = f"p:{question.paper_id}"
        spans = evidence_spans(paper_text(args.data, question.paper_id), question)
        chunks = collection.chunks(key)
        gold = {c.id for c in chunks if is_gold(c.start, c.end, spans)}
        if not gold:
            continue
        depth = min(LATENCY_CANDIDATES, len(chunks))
        hybrid: list[Hit] = []
        for mode in FIRST_STAGES:
            hits = collection.search(
                question.question, k=depth, mode=mode, embedder=embedder, keys=[key]
            )
            hybrid = hits
            _score(rows, mode, [h.chunk.id for h in hits], gold)
        cases.append(Case(question.question, hybrid[: args.candidates], gold))
        if len(hybrid) == LATENCY_CANDIDATES and len(latency) < args.latency_runs:
            latency.append([question.question, [h.chunk.text for h in hybrid]])
    return FirstStage(rows, cases, latency, len(cases), len(questions))


def _run_child(mode: str, cases: dict[str, Any]) -> dict[str, Any]:
    """Score every variant in a fresh process with `mode`'s environment (CPU kernels are chosen
    when a library loads, so a mode cannot change inside one process)."""
    folder = Path(tempfile.mkdtemp())
    (folder / "in.json").write_text(json.dumps(cases))
    env = {**os.environ, **MODES[mode]}
    command = [sys.executable, __file__, "--score", str(folder / "in.json"), str(folder / "out")]
    subprocess.run(command, env=env, check=True)
    return dict(json.loads((folder / "out").read_text()))


def _score_variants(cases_path: Path, out: Path) -> None:
    """In the child: each variant's scores for every recall case and its latency runs."""
    import torch

    from viz.rag.rerank import CrossEncoder, load_reranker

    cases = json.loads(cases_path.read_text())
    results: dict[str, Any] = {"capability": torch.backends.cpu.get_cpu_capability()}
    for variant in cases["variants"]:
        name, _, precision = variant.partition(":")
        llm = None
        if name == "llm":
            if os.environ.get("ATEN_CPU_CAPABILITY"):
                results[variant] = {"skipped": "the llm scorer runs in the native mode only"}
                continue
            from viz.api import load_base

            llm = load_base()
        try:
            scorer = load_reranker(
                name, Path(cases["home"]), llm=llm, precision=precision or "auto"
            )
        except VizError as error:
            results[variant] = {"skipped": error.message}
            continue
        recall_cases = cases["recall"][: cases["llm_questions"] if llm else None]
        sets = cases["latency"]  # papers with 50 chunks or more: a few; each timed in turn
        runs = [sets[i % len(sets)] for i in range(5 if llm else cases["latency_runs"])]
        for question, texts in sets[:2]:  # warm-up: first calls allocate and pick kernels
            scorer.score(question, texts)
        timings = []
        for question, texts in runs:
            started = time.perf_counter()
            scorer.score(question, texts)
            timings.append((time.perf_counter() - started) * 1e3)
        shape = ""
        if isinstance(scorer, CrossEncoder):
            layers = scorer.model.config.num_hidden_layers
            shape = f"{layers} layer{'s' * (layers > 1)}, {scorer.max_tokens} tokens"
        results[variant] = {
            "precision": getattr(scorer, "precision", "bf16" if llm else "fp32"),
            "shape": shape,
            "scores": [scorer.score(q, texts) for q, texts in recall_cases],
            "latency_ms": timings,
        }
    out.write_text(json.dumps(results))


class Precomputed:
    """A reranker that replays the scores a child process computed, in order."""

    def __init__(self, scores: list[list[float]]) -> None:
        self.name = "precomputed"
        self.scores = iter(scores)

    def score(self, query: str, texts: list[str]) -> list[float]:
        scores = next(self.scores)
        assert len(scores) == len(texts)
        return scores


def _report(
    first: FirstStage, variants: list[str], results: dict[str, Any], candidates: int
) -> None:
    from viz.rag.rerank import rerank

    rows = dict(first.rows)
    lines = []
    for variant in variants:
        for mode, result in results.items():
            got = result[variant]
            label = f"hybrid -> {variant} [{mode}] (top {candidates})"
            if "skipped" in got:
                lines.append(f"{variant:28} {mode:7} skipped: {got['skipped']}")
                continue
            replay = Precomputed(got["scores"])
            for case in first.cases[: len(got["scores"])]:
                reranked = rerank(replay, case.question, case.candidates, len(case.candidates))
                _score(rows, label, [h.chunk.id for h in reranked], case.gold)
                if variant == "llm":  # the same questions' first stage, for a fair ratio
                    _score(
                        rows,
                        "hybrid (llm's questions)",
                        [h.chunk.id for h in case.candidates],
                        case.gold,
                    )
            times = sorted(got["latency_ms"])
            p90 = times[int(0.9 * (len(times) - 1))] if times else float("nan")
            p50 = statistics.median(times) if times else float("nan")
            recall = mean(v[0] for v in rows[label]) or 0.0
            ratio = recall / _bm25(rows)
            lines.append(
                f"{variant:28} {mode:7} {got['precision']:9} {got['shape']:20} "
                f"{recall:>8.3f} {ratio:>9.2f}x {p50:>7.0f} {p90:>7.0f} {len(times):>4}"
            )
    print(
        f"\n## retrieval: {first.judged} questions with gold evidence in the text "
        f"(of {first.sampled} sampled), each searched within its own paper"
    )
    print(f"{'pipeline':52} {'n':>4} {'recall@5':>9} {'MRR':>6} {'nDCG@10':>8} {'R@5 / BM25':>11}")
    for label, values in rows.items():
        recall = mean(v[0] for v in values) or 0.0
        print(
            f"{label:52} {len(values):>4} {recall:>9.3f} {mean(v[1] for v in values):>6.3f} "
            f"{mean(v[2] for v in values):>8.3f} {recall / _bm25(rows):>10.2f}x"
        )
    modes = ", ".join(f"{m} = PyTorch {r['capability']} kernels" for m, r in results.items())
    print(
        f"\n## rerankers: recall@5 of the hybrid top {candidates} reranked (fused), and the "
        f"latency of reranking {LATENCY_CANDIDATES} candidates (goal p50 <= 150 ms); {modes}"
    )
    print(
        f"{'variant':28} {'mode':7} {'precision':9} {'shape':20} {'recall@5':>8} "
        f"{'R@5/BM25':>10} {'p50 ms':>7} {'p90 ms':>7} {'runs':>4}"
    )
    print("\n".join(lines))
    print(
        "\nanchors (BEIR SciFact nDCG@10, another corpus): "
        + ", ".join(f"{k} {v}" for k, v in SCIFACT.items())
    )


def _bm25(rows: Rows) -> float:
    return mean(r[0] for r in rows["lexical"]) or 1e-9


def _score(rows: Rows, label: str, ranked: list[int], gold: set[int]) -> None:
    rows.setdefault(label, []).append(
        (
            recall_at_k(ranked, gold, 5) or 0.0,
            mrr(ranked, gold) or 0.0,
            ndcg_at_k(ranked, gold, 10) or 0.0,
        )
    )


if __name__ == "__main__":
    main()
