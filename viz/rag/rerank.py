"""Reranking: score (question, chunk) pairs jointly and reorder the first stage's candidates.

Two rerankers, compared in `bench/rag.py`:

- **Cross-encoder** (the default). No reranker with weights ships on PyPI, so Viz trains one:
  the shipped all-MiniLM-L6-v2 encoder (its first `layers` layers) with a one-logit head,
  fine-tuned on QASPER-train questions against chunks of their own paper: chunks holding gold
  evidence are positives, the chunks BM25 ranks highest that hold none are hard negatives
  (`viz.rag.rerank_train`), saved in `VIZ_HOME/rerankers/<name>/` as an ordinary
  `AutoModelForSequenceClassification` safetensors folder. Any such local folder (e.g. a
  sentence-transformers cross-encoder saved with safetensors) works.
- **LLM pointwise** scoring with the base model: the chat template asks whether the passage
  answers the question, and the score is logit("Yes") - logit("No") for the next token.

Speed (`bench/rag.py`, 50 candidates on 2 cores): the default is 1 layer seeing 128 tokens, run
in bf16 where the CPU has it natively (AMX / AVX512-BF16) and with its linear layers quantised
to int8 at load time elsewhere (PyTorch dynamic quantisation: the weights stay fp32 on disk).

    reranker = load_reranker("default", home)
    best = rerank(reranker, question, hits, top_k=5)
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from viz.errors import InvalidInput, NotFound
from viz.models.loading import quiet_transformers
from viz.models.precision import native_bf16
from viz.rag.collection import NAME_PATTERN
from viz.rag.search import RRF_K, Hit

__all__ = [
    "DEFAULT_RERANKER",
    "CrossEncoder",
    "LLMScorer",
    "PRECISIONS",
    "Reranker",
    "load_cross_encoder",
    "load_reranker",
    "rerank",
    "reranker_folder",
    "resolve_precision",
]

DEFAULT_RERANKER = "minilm-qasper"
MANIFEST = "viz-reranker.json"
BATCH = 64  # the 50 candidates of the latency goal in one forward
PRECISIONS = ("auto", "bf16", "int8", "fp32")
PASSAGE_TOKENS_LLM = 384


class Reranker(Protocol):
    name: str

    def score(self, query: str, texts: list[str]) -> list[float]: ...


@dataclass
class CrossEncoder:
    """A sequence-classification model with one logit: higher means more relevant.

    `precision` is how it runs: `bf16` (autocast), `int8` (`model`'s linear layers quantised)
    or `fp32`.
    """

    name: str
    model: Any
    tokenizer: Any
    max_tokens: int
    precision: str = "fp32"

    def score(self, query: str, texts: list[str]) -> list[float]:
        import torch  # deferred: torch is heavy

        scores: list[float] = []
        bf16 = self.precision == "bf16"
        with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            for start in range(0, len(texts), BATCH):
                part = texts[start : start + BATCH]
                scores += self.model(**self._inputs(query, part)).logits[:, 0].float().tolist()
        return scores

    def _inputs(self, query: str, texts: list[str]) -> Any:
        return self.tokenizer(
            [query] * len(texts),
            texts,
            truncation="only_second",
            max_length=self.max_tokens,
            padding=True,
            return_tensors="pt",
        )


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


def resolve_precision(precision: str) -> str:
    """`auto` -> `bf16` where the CPU computes it natively, else `int8`: the fastest measured
    on each CPU class (`bench/rag.py`); any other of PRECISIONS is kept.

    Raises:
        InvalidInput: not one of PRECISIONS.
    """
    if precision not in PRECISIONS:
        raise InvalidInput(f"precision {precision!r} must be one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if native_bf16() else "int8"
    return precision


def load_cross_encoder(
    folder: Path, *, max_tokens: int | None = None, precision: str = "auto"
) -> CrossEncoder:
    """Load a cross-encoder folder (safetensors only, one output logit) to run in `precision`
    (see `resolve_precision`); `max_tokens` overrides the length it was trained with.

    Raises:
        InvalidInput: not a model folder with safetensors weights, not one logit, or an unknown
            precision.
    """
    precision = resolve_precision(precision)
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
    if precision == "int8":
        model = _quantised(model)
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    manifest = _manifest(folder)
    trained = manifest.get("settings", {})
    tokens = max_tokens or int(trained.get("max_tokens", 256))
    name = str(manifest.get("name", folder.name))
    return CrossEncoder(name, model, tokenizer, tokens, precision)


def load_reranker(
    spec: str, home: Path, *, llm: Any = None, paths: bool = True, precision: str = "auto"
) -> Reranker:
    """`spec` is a trained reranker's name (`default` = minilm-qasper), `llm` (pointwise scoring
    with `llm`, a LoadedModel) or, when `paths` (not for API callers), a cross-encoder folder;
    a cross-encoder runs in `precision` (see `resolve_precision`).

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
    return load_cross_encoder(path, precision=precision)


def _quantised(model: Any) -> Any:
    """`model` with its linear layers int8 (weights per tensor, activations quantised per
    batch): 1.2-1.5x faster than fp32 on AVX2-only CPUs, where bf16 is emulated and slow."""
    import torch  # deferred: torch is heavy

    with warnings.catch_warnings():  # torch.ao.quantization's notice that it moves to torchao
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


def _manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    if not path.is_file():
        return {}
    try:
        return dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, ValueError):
        return {}
