"""POST /v1/embeddings: the shipped all-MiniLM-L6-v2 embedder behind the API, metered per
input token at the operator's price (`VIZ_EMBEDDINGS_PRICE`) and settled like any usage event:
reserved, embedded, settled (or voided if embedding failed).

    client.embeddings.create(model="all-minilm-l6-v2", input=["What is QLoRA?", "LoRA"])
"""

from __future__ import annotations

import base64
import threading
from typing import Any, Literal

from fastapi import Request
from pydantic import BaseModel as Schema
from pydantic import ConfigDict, Field

from viz.errors import InvalidInput, LimitExceeded, NotFound
from viz.ledger import Usage, quote, reserve, settle, void_reservation
from viz.serving.call import caller, count_request
from viz.serving.server import Server
from viz.store.database import session_scope

__all__ = [
    "EMBEDDER_ID",
    "EmbeddingBody",
    "EmbeddingList",
    "Embedders",
    "embed",
    "embedder_card",
]

EMBEDDER_ID = "all-minilm-l6-v2"
INPUT_CHARS_MAX = 100_000


class EmbeddingBody(Schema):
    model_config = ConfigDict(extra="forbid")
    model: str
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = Field(default=None, max_length=256)


class Embedding(Schema):
    object: str
    index: int
    embedding: list[float] | str


class EmbeddingUsage(Schema):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(Schema):
    object: str
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage


class Embedders:
    """The embedder, loaded on first use and shared by requests (one at a time)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._embedder: Any = None

    def get(self) -> Any:
        with self.lock:
            if self._embedder is None:
                from viz.rag.embed import load_embedder  # deferred: loads torch

                self._embedder = load_embedder()
            return self._embedder


def embedder_card(price: int) -> dict[str, Any]:
    """The embedder's row in GET /v1/models."""
    return {
        "id": EMBEDDER_ID,
        "object": "model",
        "created": 0,
        "owned_by": "viz",
        "viz": {
            "kind": "embedder",
            "dimensions": 384,
            "licence": "Apache-2.0",
            "price_in_micro_per_1k": price,
        },
    }


def embed(
    server: Server,
    embedders: Embedders,
    request: Request,
    body: EmbeddingBody,
    authorization: str | None,
) -> dict[str, Any]:
    """Authenticate, check, reserve, embed, settle; OpenAI's embedding list."""
    settings = server.settings
    with session_scope(server.database) as session:
        account = caller(session, authorization)
        consumer = account.name
        count_request(server, session, account.id, request)
    texts = _texts(body, settings.embeddings_inputs_max)
    embedder = embedders.get()
    counts = [len(ids) for ids in embedder.tokenizer(texts, truncation=False)["input_ids"]]
    too_long = [i for i, count in enumerate(counts) if count > embedder.max_tokens]
    if too_long:
        raise LimitExceeded(
            f"input[{too_long[0]}] is {counts[too_long[0]]} tokens; {EMBEDDER_ID} reads at most "
            f"{embedder.max_tokens}: split the text"
        )
    request_id = request.state.request_id
    usage = Usage(
        request_id, consumer, EMBEDDER_ID, sum(counts), 0, service_price=settings.embeddings_price
    )
    fee = settings.platform_fee_bps
    with session_scope(server.database) as session:
        most = quote(session, usage, fee_bps=fee)
        if most:
            reserve(session, request_id, consumer, most, timeout_s=settings.reservation_timeout_s)
    try:
        with embedders.lock:
            vectors = embedder.encode(texts)
    except BaseException:
        if most:
            with session_scope(server.database) as session:
                void_reservation(session, request_id)
        raise
    with session_scope(server.database) as session:
        settle(session, usage, fee_bps=fee)
    data = [
        {"object": "embedding", "index": index, "embedding": _encoded(row, body.encoding_format)}
        for index, row in enumerate(vectors)
    ]
    tokens = sum(counts)
    return {
        "object": "list",
        "data": data,
        "model": EMBEDDER_ID,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _texts(body: EmbeddingBody, inputs_max: int) -> list[str]:
    if body.model != EMBEDDER_ID:
        raise NotFound(
            f"no embedder {body.model!r}; the embedders are: {EMBEDDER_ID} (GET /v1/models)"
        )
    if body.dimensions is not None and body.dimensions != 384:
        raise InvalidInput(f"{EMBEDDER_ID} gives 384 dimensions; drop dimensions or send 384")
    texts = [body.input] if isinstance(body.input, str) else body.input
    if not texts:
        raise InvalidInput("input is empty: send a string or a list of strings")
    if not all(isinstance(text, str) for text in texts):
        raise InvalidInput(
            "input as token ids is not supported (they would be another tokenizer's): send text"
        )
    if len(texts) > inputs_max:
        raise LimitExceeded(
            f"{len(texts)} inputs; at most {inputs_max} per request (VIZ_EMBEDDINGS_INPUTS_MAX)"
        )
    strings = [text for text in texts if isinstance(text, str)]
    for index, text in enumerate(strings):
        if not text.strip():
            raise InvalidInput(f"input[{index}] is empty: every input must have some text")
        if len(text) > INPUT_CHARS_MAX:
            raise LimitExceeded(f"input[{index}] is over {INPUT_CHARS_MAX} characters")
    return strings


def _encoded(row: Any, encoding: str) -> list[float] | str:
    if encoding == "base64":  # little-endian float32, as OpenAI sends it
        return base64.b64encode(row.numpy().astype("<f4").tobytes()).decode()
    return [float(value) for value in row]
