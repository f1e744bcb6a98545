"""`viz eval rag`: the seed-003 grid, measured.

Cells (37 in the full grid):

- `vanilla`: the model answers the question alone;
- `rag-c{800,1200,1600}-k{3,5,7}`: the first stage's top k chunks are the sources;
- `rar-c{800,1200,1600}-n{10,20,50}-k{3,5,7}`: the first stage's top n are reranked, the best k
  are the sources (and the "can't find" path applies when the best is not relevant).

QASPER questions are about one paper, so retrieval for a question searches that paper's chunks
(one collection per chunk size holds every paper of the run; the search is limited to the
question's paper). The first stage is hybrid (BM25 + dense by RRF) unless `first_stage` says
otherwise; its top 50 is computed once per question and chunk size and shared by the cells,
and each number of candidates n is reranked once and shared by its top-k cells (so a cell's
rerank time is measured on its own n candidates).

Scores per question and cell, then averaged per cell:

- retrieval against **gold chunks** (those covering gold evidence, `viz.datasets.qasper.is_gold`):
  recall@k of the sources, MRR and nDCG@10 of the cell's ranking (the first stage's top 50 for
  rag, the n reranked candidates for rar); None for questions without gold evidence in the text;
- answers: exact match and token F1 (SQuAD normalisation, best over the reference answers,
  yes/no and unanswerable as QASPER scores them; "I can't find this" counts as unanswerable);
- citations: precision = cited sources that are gold / cited; recall = gold sources cited /
  gold sources shown (what the answer could have cited);
- answer length in tokens, whether it ended by itself (not at max_tokens), latency per stage,
  prompt tokens.

Answers are generated greedily and appended to `answers.jsonl` as they come, so a stopped run
resumes where it stopped (and a cell whose sources equal another's reuses its answer).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from viz.datasets.qasper import Question, evidence_spans, is_gold, load_questions, paper_text
from viz.datasets.qasper import sample_questions as sample_of
from viz.errors import InvalidInput
from viz.eval.metrics import (
    answer_scores,
    citation_scores,
    mean,
    mrr,
    ndcg_at_k,
    recall_at_k,
)
from viz.eval.report import write_report
from viz.models.generate import GenerationSettings, generate_text
from viz.rag.answer import Retrieval, Source, _sigmoid, answer_question
from viz.rag.chunking import check_sizes
from viz.rag.collection import Collection, CollectionSettings, SourceDocument, create_collection
from viz.rag.rerank import rerank
from viz.rag.search import MODES, Hit

__all__ = ["Cell", "GridSettings", "grid", "run_rag_eval"]

METHODS = ("vanilla", "rag", "rar")
VANILLA_SYSTEM = "Answer the question briefly, in one or two sentences."
DEPTH = 50


@dataclass(frozen=True)
class Cell:
    method: str
    chunk_chars: int | None = None
    candidates: int | None = None
    top_k: int | None = None

    @property
    def name(self) -> str:
        if self.method == "vanilla":
            return "vanilla"
        if self.method == "rag":
            return f"rag-c{self.chunk_chars}-k{self.top_k}"
        return f"rar-c{self.chunk_chars}-n{self.candidates}-k{self.top_k}"


@dataclass(frozen=True)
class GridSettings:
    chunk_sizes: tuple[int, ...] = (800, 1200, 1600)
    top_ks: tuple[int, ...] = (3, 5, 7)
    candidates: tuple[int, ...] = (10, 20, 50)
    first_stage: str = "hybrid"
    max_tokens: int = 64
    min_relevance: float = 0.02
    methods: tuple[str, ...] = METHODS  # which kinds of cell run

    def check(self) -> None:
        """Raise InvalidInput naming every bad setting."""
        problems = []
        for size in self.chunk_sizes:
            try:
                check_sizes(size, 0)
            except InvalidInput as error:
                problems.append(error.message)
        if any(not 1 <= k <= 20 for k in self.top_ks):
            problems.append("top-k values must be 1..20")
        if any(not 1 <= n <= DEPTH for n in self.candidates):
            problems.append(f"candidates values must be 1..{DEPTH}")
        if self.first_stage not in MODES:
            problems.append(f"first stage {self.first_stage!r} must be one of {', '.join(MODES)}")
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            problems.append(f"methods {', '.join(unknown) or '(none)'}: use {', '.join(METHODS)}")
        if not 1 <= self.max_tokens <= 2048:
            problems.append(f"max tokens {self.max_tokens} must be 1..2048")
        if problems:
            raise InvalidInput("; ".join(problems))


def grid(settings: GridSettings) -> list[Cell]:
    cells = [Cell("vanilla")]
    cells += [Cell("rag", c, None, k) for c in settings.chunk_sizes for k in settings.top_ks]
    cells += [
        Cell("rar", c, n, k)
        for c in settings.chunk_sizes
        for n in settings.candidates
        for k in settings.top_ks
        if n >= k
    ]
    return [cell for cell in cells if cell.method in settings.methods]


def run_rag_eval(
    data: Path,
    out: Path,
    *,
    llm: Any,
    embedder: Any,
    reranker: Any,
    settings: GridSettings | None = None,
    sample: int | None = None,
    seed: int = 0,
    meta: dict[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
    index_dir: Path | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Path]]:
    """Run the grid on `sample` questions of `data` (all if None) and write the report to `out`
    (the collections go to `index_dir`, default `out/index`, and are reused by later runs).

    Returns the cells' averages and the report files.
    """
    settings = settings or GridSettings()
    settings.check()
    questions = sample_of(load_questions(data), sample, seed=seed)
    out.mkdir(parents=True, exist_ok=True)
    cells = grid(settings)
    done = _load_answers(out / "answers.jsonl")
    papers = sorted({q.paper_id for q in questions})
    collections = _paper_collections(data, papers, index_dir or out / "index", settings, embedder)
    total = len(questions) * len(cells)
    finished = 0
    _end_cut_line(out / "answers.jsonl")
    with (out / "answers.jsonl").open("a", encoding="utf-8") as log:
        for question in questions:
            text = paper_text(data, question.paper_id)
            spans = evidence_spans(text, question)
            stages = {
                size: _first_stage(collections[size], question, spans, settings, embedder, reranker)
                for size in settings.chunk_sizes
            }
            reuse: dict[tuple[int, ...] | str, dict[str, Any]] = {}
            for cell in cells:
                key = f"{question.question_id}|{cell.name}"
                if key not in done:
                    record = _run_cell(cell, question, stages, llm, settings, reuse)
                    record["key"] = key
                    log.write(json.dumps(record) + "\n")
                    log.flush()
                    done[key] = record
                finished += 1
                if progress:
                    progress(finished, total)
    for collection in collections.values():
        collection.close()
    rows = [
        _average(cell, [done[f"{q.question_id}|{cell.name}"] for q in questions]) for cell in cells
    ]
    info = {
        "title": "Retrieve-and-rerank on QASPER: the seed-003 grid, scored",
        "dataset": str(data),
        "questions": len(questions),
        "sample_seed": seed,
        "first_stage": settings.first_stage,
        "max_tokens": settings.max_tokens,
        **(meta or {}),
    }
    return rows, write_report(out, rows, info)


def _paper_collections(
    data: Path, papers: list[str], folder: Path, settings: GridSettings, embedder: Any
) -> dict[int, Collection]:
    """One collection per chunk size over `papers`, in `folder/c<size>` (reused if there)."""
    collections = {}
    for size in settings.chunk_sizes:
        collection = create_collection(folder / f"c{size}", CollectionSettings("chars", size))
        collection.add(
            [
                SourceDocument(f"paper:{p}", p, paper_text(data, p), licence="CC-BY-4.0")
                for p in papers
            ],
            embedder,
        )
        collections[size] = collection
    return collections


@dataclass
class _Stage:
    ranking: list[Hit]  # first stage, top DEPTH
    retrieve_ms: float
    reranked: dict[int, tuple[list[Hit], float]]  # candidates -> (reranked, ms)
    gold: set[int]


def _first_stage(
    collection: Any,
    question: Question,
    spans: list[tuple[int, int]],
    settings: GridSettings,
    embedder: Any,
    reranker: Any,
) -> _Stage:

    key = f"paper:{question.paper_id}"
    started = time.perf_counter()
    ranking = collection.search(
        question.question,
        k=min(DEPTH, collection.chunk_count()),
        mode=settings.first_stage,
        embedder=embedder,
        keys=[key],
    )
    retrieve_ms = (time.perf_counter() - started) * 1e3
    reranked = {}
    for n in settings.candidates:
        started = time.perf_counter()
        reranked[n] = (
            rerank(reranker, question.question, ranking[:n], n),
            (time.perf_counter() - started) * 1e3,
        )
    gold = {c.id for c in collection.chunks(key) if is_gold(c.start, c.end, spans)}
    return _Stage(ranking, retrieve_ms, reranked, gold)


def _run_cell(
    cell: Cell,
    question: Question,
    stages: dict[int, _Stage],
    llm: Any,
    settings: GridSettings,
    reuse: dict[Any, dict[str, Any]],
) -> dict[str, Any]:
    """One question in one cell: its answer, scores and timings (answers are shared by cells
    that give the model the same sources, through `reuse`)."""
    if cell.method == "vanilla":
        return _run_vanilla(question, llm, settings)
    assert cell.chunk_chars is not None and cell.top_k is not None
    stage = stages[cell.chunk_chars]
    if cell.method == "rag":
        ranking, rerank_ms = stage.ranking, 0.0
        relevant = bool(ranking)
    else:
        assert cell.candidates is not None
        ranking, rerank_ms = stage.reranked[cell.candidates]
        relevant = (
            bool(ranking) and _sigmoid(max(h.score for h in ranking)) >= settings.min_relevance
        )
    top = ranking[: cell.top_k]
    gold = stage.gold
    ids = [h.chunk.id for h in ranking]
    sources = [
        Source(n, hit, question.paper_title, "CC-BY-4.0", "", None) for n, hit in enumerate(top, 1)
    ]
    signature = (relevant, *[h.chunk.id for h in top])
    if signature in reuse:
        answer = dict(reuse[signature])
    else:
        answer = _grounded_answer(question, Retrieval(sources, relevant), llm, settings)
        reuse[signature] = answer
    em, f1 = answer_scores(answer["answer"], list(question.answers))
    gold_numbers = {s.number for s in sources if s.hit.chunk.id in gold}
    precision, recall = citation_scores(answer["cited"], gold_numbers)
    has_gold = bool(gold)
    return {
        **answer,
        "sources": [h.chunk.id for h in top],
        "recall_at_k": recall_at_k(ids, gold, cell.top_k) if has_gold else None,
        "mrr": mrr(ids, gold) if has_gold else None,
        "ndcg_at_10": ndcg_at_k(ids, gold, 10) if has_gold else None,
        "exact_match": em,
        "f1": f1,
        "citation_precision": precision,
        "citation_recall": recall,
        "retrieve_ms": stage.retrieve_ms,
        "rerank_ms": rerank_ms,
    }


def _run_vanilla(question: Question, llm: Any, settings: GridSettings) -> dict[str, Any]:
    """The model alone, without sources."""
    started = time.perf_counter()
    stream = generate_text(
        llm.model,
        llm.tokenizer,
        [
            {"role": "system", "content": VANILLA_SYSTEM},
            {"role": "user", "content": question.question},
        ],
        GenerationSettings(max_tokens=settings.max_tokens),
        max_tokens_limit=settings.max_tokens,
    )
    text = "".join(stream)
    em, f1 = answer_scores(text, list(question.answers))
    return {
        "answer": text,
        "exact_match": em,
        "f1": f1,
        "answer_tokens": stream.completion_tokens,
        "ended_cleanly": float(stream.finish_reason == "stop"),
        "generate_ms": (time.perf_counter() - started) * 1e3,
        "prompt_tokens": stream.prompt_tokens,
    }


def _grounded_answer(
    question: Question, retrieval: Retrieval, llm: Any, settings: GridSettings
) -> dict[str, Any]:
    """The model's answer from the numbered sources, with what it cited."""
    result = answer_question(
        llm.model,
        llm.tokenizer,
        question.question,
        retrieval,
        max_tokens=settings.max_tokens,
    )
    return {
        "answer": result.text,
        "cited": result.cited,
        "citation_mode": result.citation_mode,
        "answer_tokens": result.completion_tokens,
        "ended_cleanly": float(result.finish_reason == "stop"),
        "generate_ms": result.generate_ms,
        "prompt_tokens": result.prompt_tokens,
    }


def _average(cell: Cell, records: list[dict[str, Any]]) -> dict[str, Any]:
    metrics = (
        "recall_at_k", "mrr", "ndcg_at_10", "exact_match", "f1", "citation_precision",
        "citation_recall", "answer_tokens", "ended_cleanly", "retrieve_ms", "rerank_ms",
        "generate_ms", "prompt_tokens",
    )  # fmt: skip
    return {
        "cell": cell.name,
        "method": cell.method,
        "chunk_chars": cell.chunk_chars,
        "candidates": cell.candidates,
        "top_k": cell.top_k,
        **{m: mean(r.get(m) for r in records) for m in metrics},
        "questions": len(records),
    }


def _load_answers(path: Path) -> dict[str, dict[str, Any]]:
    done: dict[str, dict[str, Any]] = {}
    if not path.is_file():
        return done
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by a crash: that cell runs again
            continue
        if isinstance(record, dict) and "key" in record:
            done[record["key"]] = record
    return done


def _end_cut_line(path: Path) -> None:
    """After a crash mid-write, start the next record on a line of its own."""
    if path.is_file() and path.stat().st_size:
        with path.open("rb+") as handle:
            handle.seek(-1, 2)
            if handle.read(1) != b"\n":
                handle.write(b"\n")
