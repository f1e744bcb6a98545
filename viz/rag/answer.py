"""Grounded answers: retrieve (and rerank) sources, prompt with them numbered, cite them.

The pipeline for one question:

1. **Retrieve** `candidates` chunks (or `top_k` without a reranker) from a collection, lexical,
   dense or hybrid; documents whose catalogue entry no longer allows `ai_inference` are dropped
   (`allowed`), so they never reach a prompt.
2. **Rerank** the candidates and keep the best `top_k` (the reranker's order fused with the
   first stage's, see `viz.rag.rerank.rerank`). When the reranker is a cross-encoder and even
   the best source's relevance, sigmoid(score), is below `min_relevance`, or retrieval found
   nothing, the answer is **"I can't find this in the sources."** and no model is called.
3. **Prompt** with the model's chat template: a system message asking for an answer from the
   numbered sources only, citing them as [n], and the sources `[1] title\\ntext` in rank order.
4. **Cite**: the [n] markers the answer uses are its citations. A small model often forgets
   them; then the answer is attributed after the fact to the one source sharing most of its
   words (at least half of its content words), marked `citation_mode = "attributed"`.

    retrieval = retrieve(collection, question, RagSettings(top_k=5, candidates=20), ...)
    messages = grounded_messages(question, retrieval.sources)
    answer, cited, mode = cite(text, retrieval.sources)
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from viz.errors import InvalidInput
from viz.models.generate import GenerationSettings, generate_text
from viz.rag.citations import parse_citations, says_cannot_find
from viz.rag.collection import Collection
from viz.rag.rerank import CrossEncoder, Reranker, rerank
from viz.rag.search import MODES, Hit

__all__ = [
    "CANNOT_FIND",
    "Answer",
    "answer_question",
    "RagSettings",
    "Retrieval",
    "Source",
    "cite",
    "grounded_messages",
    "numbered_messages",
    "retrieve",
]

CANNOT_FIND = "I can't find this in the sources."
SYSTEM = (
    "Answer the question using only the numbered sources. Answer briefly, in one or two "
    "sentences, and cite the sources you use like [1]. If the sources do not contain the "
    f"answer, reply exactly: {CANNOT_FIND}"
)
TOP_K_MAX = 20
CANDIDATES_MAX = 200
SOURCE_CHARS_MAX = 4000
ATTRIBUTION_SHARE = 0.5
_WORD = re.compile(r"\w+")
_STOPWORD_TEXT = (
    "a an the of to in on for and or but is are was were be been it its this that these those "
    "with by as at from we they he she you i our their which what who how why when where do does "
    "did not no yes can could would should will may might has have had than then there here"
)
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())


@dataclass(frozen=True)
class RagSettings:
    """`candidates` = 0 means no reranking: the first stage's top `top_k` are the sources."""

    top_k: int = 5
    candidates: int = 20
    mode: str = "hybrid"
    min_relevance: float = 0.02

    def check(self) -> None:
        problems = []
        if isinstance(self.top_k, bool) or not 1 <= self.top_k <= TOP_K_MAX:
            problems.append(f"top_k {self.top_k!r} must be 1..{TOP_K_MAX}")
        if self.candidates and not self.top_k <= self.candidates <= CANDIDATES_MAX:
            problems.append(
                f"candidates {self.candidates!r} must be 0 (no reranking) or "
                f"top_k..{CANDIDATES_MAX}"
            )
        if self.mode not in MODES:
            problems.append(f"mode {self.mode!r} must be one of {', '.join(MODES)}")
        if not 0.0 <= self.min_relevance < 1.0:
            problems.append(f"min_relevance {self.min_relevance!r} must be in [0, 1)")
        if problems:
            raise InvalidInput("; ".join(problems))


@dataclass(frozen=True)
class Source:
    """One numbered source of an answer: a chunk and where it comes from."""

    number: int
    hit: Hit
    title: str
    licence: str
    attribution: str
    document_id: int | None

    def as_json(self, collection: str) -> dict[str, Any]:
        chunk = self.hit.chunk
        return {
            "index": self.number,
            "collection": collection,
            "document_id": self.document_id,
            "document": chunk.key,
            "title": self.title,
            "licence": self.licence,
            "attribution": self.attribution,
            "start": chunk.start,
            "end": chunk.end,
            "score": round(self.hit.score, 4),
            "text": chunk.text,
        }


@dataclass
class Retrieval:
    sources: list[Source]
    relevant: bool
    candidates: list[Hit] = field(default_factory=list)
    retrieve_ms: float = 0.0
    rerank_ms: float = 0.0


def retrieve(
    collection: Collection,
    question: str,
    settings: RagSettings,
    *,
    embedder: Any = None,
    reranker: Reranker | None = None,
    keys: Iterable[str] | None = None,
    allowed: Callable[[list[int]], set[int]] | None = None,
) -> Retrieval:
    """Sources for `question` from `collection`. `allowed(document_ids)` returns the ids still
    allowed for inference (catalogued documents only; others, like eval papers, pass)."""
    settings.check()
    if settings.candidates and reranker is None:
        raise InvalidInput("reranking needs a reranker; pass candidates = 0 to skip it")
    depth = settings.candidates or settings.top_k
    started = time.perf_counter()
    key_list = None if keys is None else list(keys)
    hits = collection.search(
        question,
        k=min(depth, collection.chunk_count()),
        mode=settings.mode,
        embedder=embedder,
        keys=key_list,
    )
    documents = {d["key"]: d for d in collection.documents({h.chunk.key for h in hits})}
    if allowed is not None:
        ids = [d["document_id"] for d in documents.values() if d["document_id"] is not None]
        still = allowed(ids)
        hits = [
            h
            for h in hits
            if documents[h.chunk.key]["document_id"] is None
            or documents[h.chunk.key]["document_id"] in still
        ]
    retrieve_ms = (time.perf_counter() - started) * 1e3
    started = time.perf_counter()
    relevant = bool(hits)
    if settings.candidates and hits:
        hits = rerank(reranker, question, hits, settings.top_k)  # type: ignore[arg-type]
        if isinstance(reranker, CrossEncoder):
            relevant = _sigmoid(max(h.score for h in hits)) >= settings.min_relevance
    else:
        hits = hits[: settings.top_k]
    rerank_ms = (time.perf_counter() - started) * 1e3 if settings.candidates else 0.0
    sources = [
        Source(
            number,
            hit,
            documents[hit.chunk.key]["title"],
            documents[hit.chunk.key]["licence"],
            documents[hit.chunk.key]["attribution"],
            documents[hit.chunk.key]["document_id"],
        )
        for number, hit in enumerate(hits, 1)
    ]
    return Retrieval(sources, relevant, hits, retrieve_ms, rerank_ms)


def grounded_messages(question: str, sources: list[Source]) -> list[dict[str, str]]:
    """The chat messages for a grounded answer: instructions, then numbered sources."""
    return numbered_messages(question, [(s.number, s.title, s.hit.chunk.text) for s in sources])


def numbered_messages(question: str, sources: list[tuple[int, str, str]]) -> list[dict[str, str]]:
    """The same from (number, title, text) triples (what the reader adapter trains on)."""
    blocks = [f"[{n}] {title}\n{text[:SOURCE_CHARS_MAX].strip()}" for n, title, text in sources]
    content = "Sources:\n\n" + "\n\n".join(blocks) + f"\n\nQuestion: {question.strip()}"
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": content}]


def cite(answer: str, sources: list[Source]) -> tuple[str, list[int], str]:
    """(answer, cited source numbers, mode): the answer's own [n] markers ("model"), else the
    source it borrows most words from ("attributed", a marker appended), else none ("none")."""
    text = answer.strip()
    cited = parse_citations(text, len(sources))
    if cited:
        return text, cited, "model"
    words = _content_words(text)
    if not words or says_cannot_find(text):
        return text, [], "none"
    best, share = 0, 0.0
    for source in sources:
        found = _content_words(source.hit.chunk.text)
        overlap = len(words & found) / len(words)
        if overlap > share:
            best, share = source.number, overlap
    if best and share >= ATTRIBUTION_SHARE:
        return f"{text} [{best}]", [best], "attributed"
    return text, [], "none"


def _content_words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOPWORDS and len(w) > 1}


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x > -50 else 0.0


@dataclass
class Answer:
    """A grounded answer: its text (with [n] markers), every source shown to the model, which
    of them it cites, and what it took."""

    text: str
    sources: list[Source]
    cited: list[int]
    citation_mode: str  # model | attributed | none
    relevant: bool
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    retrieve_ms: float
    rerank_ms: float
    generate_ms: float
    note: str | None = None  # how it was answered, when not as asked (e.g. no reranker)


def answer_question(
    model: Any,
    tokenizer: Any,
    question: str,
    retrieval: Retrieval,
    *,
    max_tokens: int = 128,
    prompt_tokens_max: int = 4096,
) -> Answer:
    """Generate (greedy) a grounded answer from `retrieval`, or say the sources lack it."""
    if not retrieval.relevant or not retrieval.sources:
        return Answer(
            CANNOT_FIND, retrieval.sources, [], "none", False, "stop", 0, 0,
            retrieval.retrieve_ms, retrieval.rerank_ms, 0.0,
        )  # fmt: skip
    started = time.perf_counter()
    stream = generate_text(
        model,
        tokenizer,
        grounded_messages(question, retrieval.sources),
        GenerationSettings(max_tokens=max_tokens),
        prompt_tokens_max=prompt_tokens_max,
        max_tokens_limit=max(max_tokens, 1),
    )
    raw = "".join(stream)
    text, cited, mode = cite(raw, retrieval.sources)
    return Answer(
        text,
        retrieval.sources,
        cited,
        mode,
        True,
        stream.finish_reason or "stop",
        stream.prompt_tokens,
        stream.completion_tokens,
        retrieval.retrieve_ms,
        retrieval.rerank_ms,
        (time.perf_counter() - started) * 1e3,
    )
