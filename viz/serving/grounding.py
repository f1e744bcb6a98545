"""RAG in the API: a chat completion with `viz.rag` is answered from a collection's documents.

    client.chat.completions.create(
        model="smollm2-135m-instruct", messages=[{"role": "user", "content": question}],
        extra_body={"viz": {"rag": {"collection": "papers", "top_k": 5, "candidates": 20}}},
    )

The last user message is the question. Its sources are retrieved (and reranked) before the
request is priced, so the reservation covers every source's citation price; the messages sent
to the model become the grounded prompt (`viz.rag.answer.grounded_messages`, the caller's own
system message kept after Viz's). When the answer is known, its [n] markers (or the source it
was attributed to) are its citations: the response lists them under `citations`, and the usage
event pays each cited document's owner its per-citation price, in the same settlement. When
nothing relevant is found the answer is "I can't find this in the sources." and nothing runs
or is charged.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel as Schema
from pydantic import ConfigDict, Field

from viz.config import Settings
from viz.errors import InvalidInput, VizError
from viz.rag.answer import (
    CANDIDATES_MAX,
    SYSTEM,
    TOP_K_MAX,
    RagSettings,
    Source,
    cite,
    grounded_messages,
)
from viz.rag.cache import retrieve_from_catalogue
from viz.rag.collection import Collection, collection_folder, open_collection

__all__ = ["Grounding", "RagOptions", "Retriever"]


class RagOptions(Schema):
    model_config = ConfigDict(extra="forbid")
    collection: str
    top_k: int = Field(default=5, ge=1, le=TOP_K_MAX)
    candidates: int = Field(default=20, ge=0, le=CANDIDATES_MAX)
    mode: str = "hybrid"
    reranker: str = "default"
    min_relevance: float = Field(default=0.02, ge=0, lt=1)
    # The grounded reader adapter composed after the model: "default" (VIZ_RAG_READER, when it
    # is published for the request's base), "none", or an adapter's name.
    reader: str = Field(default="default", max_length=64)


@dataclass
class Grounding:
    """The sources of one request and, once answered, what each choice cites."""

    collection: str
    sources: list[Source]
    relevant: bool
    retrieve_ms: float
    rerank_ms: float
    cited: list[int] = field(default_factory=list)  # source numbers, over all choices
    modes: list[str] = field(default_factory=list)

    def document_ids(self, numbers: list[int] | None = None) -> tuple[int, ...]:
        """Catalogued documents among the sources (or among `numbers`), each once."""
        chosen = [s for s in self.sources if numbers is None or s.number in numbers]
        return tuple(dict.fromkeys(s.document_id for s in chosen if s.document_id is not None))

    def cite(self, text: str) -> str:
        """Record what `text` (one choice's answer) cites; return it with any added marker."""
        marked, numbers, mode = cite(text, self.sources)
        self.cited = sorted(set(self.cited) | set(numbers))
        self.modes.append(mode)
        return marked

    def citations(self) -> list[dict[str, Any]]:
        return [s.as_json(self.collection) for s in self.sources if s.number in self.cited]

    def summary(self) -> dict[str, Any]:
        return {
            "collection": self.collection,
            "sources": len(self.sources),
            "relevant": self.relevant,
            "citation_modes": self.modes,
            "retrieve_ms": round(self.retrieve_ms, 1),
            "rerank_ms": round(self.rerank_ms, 1),
        }


@dataclass
class Retriever:
    """Collections, the embedder and rerankers of one server, used one request at a time."""

    settings: Settings
    database: Any
    collections: dict[str, Collection] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ground(
        self, options: RagOptions, messages: list[dict[str, Any]]
    ) -> tuple[Grounding, list[dict[str, str]]]:
        """Retrieve sources for the last user message; return them and the grounded messages.

        Raises:
            InvalidInput: no user message, bad options, an empty collection.
            NotFound: no such collection or reranker.
        """
        try:
            return self._ground(options, messages)
        except VizError as error:
            error.param = "viz.rag"  # type: ignore[attr-defined]  # the API's error names it
            raise

    def _ground(
        self, options: RagOptions, messages: list[dict[str, Any]]
    ) -> tuple[Grounding, list[dict[str, str]]]:
        questions = [m["content"] for m in messages if m["role"] == "user"]
        if not questions:
            raise InvalidInput("viz.rag needs a user message: it is the question")
        settings = RagSettings(
            options.top_k, options.candidates, options.mode, options.min_relevance
        )
        settings.check()
        with self.lock:
            retrieval = retrieve_from_catalogue(
                self._collection(options.collection),
                questions[-1],
                settings,
                self.database,
                self.settings,
                reranker=options.reranker,
                paths=False,  # a caller names a trained reranker, never a folder here
            )
        grounding = Grounding(
            options.collection,
            retrieval.sources,
            retrieval.relevant and bool(retrieval.sources),
            retrieval.retrieve_ms,
            retrieval.rerank_ms,
        )
        grounded = grounded_messages(questions[-1], retrieval.sources)
        own_system = [m["content"] for m in messages if m["role"] == "system"]
        if own_system:
            grounded[0] = {"role": "system", "content": "\n\n".join([SYSTEM, *own_system])}
        last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")
        history = [m for m in messages[:last_user] if m["role"] != "system"]
        return grounding, [grounded[0], *history, grounded[1]]

    def _collection(self, name: str) -> Collection:
        if name not in self.collections:
            self.collections[name] = open_collection(collection_folder(self.settings.home, name))
        return self.collections[name]

    def close(self) -> None:
        with self.lock:
            for collection in self.collections.values():
                collection.close()
            self.collections.clear()
