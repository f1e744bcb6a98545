"""The OpenAI-compatible request bodies, with Viz's own `viz` options, and the shapes of the
answers and errors as the OpenAPI spec publishes them (`ANSWERS`).

    {"model": "qasper-nlp:0.7", "messages": [...], "max_tokens": 64, "stream": true,
     "viz": {"parents": true, "rag": {"collection": "papers"}, "route": {"budget": 500}}}

Pydantic validates them; a bad field is answered 400 `invalid_request_error` naming it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel as Schema
from pydantic import ConfigDict, Field

from viz.serving.grounding import RagOptions

__all__ = [
    "ANSWERS",
    "CHOICES_MAX",
    "Completion",
    "ErrorBody",
    "ModelList",
    "ChatBody",
    "CompletionBody",
    "Message",
    "RouteOptions",
    "StreamOptions",
    "TextBody",
    "VizOptions",
]

CHOICES_MAX = 4


class Message(Schema):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "user", "assistant"]
    content: str


class RouteOptions(Schema):
    """With `model: "auto"`: what the recommender sizes the choice to (see viz.routing)."""

    hardware: str | None = Field(default=None, max_length=200)  # default: the server's
    budget: int | None = Field(default=None, ge=0)  # micro-units per 1k tokens, in or out
    max_latency_ms: float | None = Field(default=None, gt=0)
    context_tokens: int = Field(default=2048, ge=1, le=1_048_576)


class VizOptions(Schema):
    parents: bool = True
    rag: RagOptions | None = None
    route: RouteOptions | None = None


class StreamOptions(Schema):
    include_usage: bool = False


class CompletionBody(Schema):
    model_config = ConfigDict(extra="allow")
    model: str
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0, le=2)
    top_p: float = Field(default=1.0, gt=0, le=1)
    seed: int | None = Field(default=None, ge=-(2**63), le=2**63 - 1 - CHOICES_MAX)
    stop: str | list[str] | None = None
    n: int = Field(default=1, ge=1, le=CHOICES_MAX)
    stream: bool = False
    stream_options: StreamOptions | None = None
    viz: VizOptions = Field(default_factory=VizOptions)


class ChatBody(CompletionBody):
    messages: list[Message] = Field(min_length=1)


class TextBody(CompletionBody):
    prompt: str


# --- answers, as published in the OpenAPI spec ---------------------------------------------------


class TokenUsage(Schema):
    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(ge=0)
    total_tokens: int = Field(ge=0)


class Completion(Schema):
    """A chat or text completion (`object` says which); extra Viz fields: citations, viz."""

    model_config = ConfigDict(extra="allow")
    id: str
    object: str
    created: int
    model: str
    choices: list[dict[str, Any]]
    usage: TokenUsage


class ModelCard(Schema):
    model_config = ConfigDict(extra="allow")
    id: str
    object: str
    created: int
    owned_by: str


class ModelList(Schema):
    object: str
    data: list[ModelCard]


class ErrorDetail(Schema):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorBody(Schema):
    """Every error the API answers: OpenAI's shape."""

    error: ErrorDetail


_ERRORS = {
    400: "bad input: a malformed body or option, a limit exceeded, a reused Idempotency-Key",
    401: "no API key, or a wrong or revoked one",
    403: "a private adapter of another account, or a taken-down one",
    404: "an unknown model, adapter, collection or reranker",
    409: "an Idempotency-Key still running, another account's, or whose answer was evicted",
    429: "insufficient_quota (the balance), or rate_limit_exceeded (per minute, or a full queue)",
    503: "the engine's servers are unavailable; retry",
}
# The error responses every API operation may give, as FastAPI's `responses=` takes them.
ANSWERS: dict[int | str, dict[str, object]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in _ERRORS.items()
}
