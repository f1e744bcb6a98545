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
    "REFUSED",
    "ResponseFormat",
    "Tool",
    "RouteOptions",
    "StreamOptions",
    "TextBody",
    "VizOptions",
]

CHOICES_MAX = 4
TOOLS_MAX = 64
TEXT_MAX = 1_000_000  # characters in one message or prompt (the token limit comes first)

# OpenAI request fields Viz does not implement, and why: a request naming one is refused (400)
# rather than answered as if it had been honoured. Unknown fields are refused too.
REFUSED = {
    "audio": "audio output is not supported: Viz's bases generate text only",
    "prediction": "predicted outputs are not supported",
    "web_search_options": "web search is not supported; ground answers with viz.rag instead",
    "reasoning_effort": "the bases are not reasoning models",
    "verbosity": "the bases have no verbosity control; use max_tokens",
    "functions": "the deprecated functions field is not supported: send tools",
    "function_call": "the deprecated function_call field is not supported: send tool_choice",
    "suffix": "suffix (insertion) is not supported by the bases",
    "best_of": "best_of is not supported: use n and choose among the choices",
    "include_obfuscation": "stream obfuscation is not offered; drop it (or send false)",
}


class Strict(Schema):
    """A request object: a field it does not declare is refused (400 naming it), not ignored."""

    model_config = ConfigDict(extra="forbid")


class CalledFunction(Strict):
    name: str = Field(max_length=64)
    arguments: str = Field(max_length=TEXT_MAX)  # JSON text, as OpenAI sends it


class ToolCall(Strict):
    id: str = Field(max_length=256)
    type: Literal["function"] = "function"
    function: CalledFunction


class Message(Strict):
    """A chat turn. `content` is a string or a list of parts, of which only text parts are
    read; an assistant turn may carry `tool_calls`, a tool turn answers one (`tool_call_id`)."""

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = Field(default=None, max_length=TEXT_MAX)
    name: str | None = Field(default=None, max_length=64)
    tool_calls: list[ToolCall] | None = Field(default=None, max_length=TOOLS_MAX)
    tool_call_id: str | None = Field(default=None, max_length=256)
    refusal: str | None = None


class RouteOptions(Strict):
    """With `model: "auto"`: what the recommender sizes the choice to (see viz.routing)."""

    hardware: str | None = Field(default=None, max_length=200)  # default: the server's
    budget: int | None = Field(default=None, ge=0)  # micro-units per 1k tokens, in or out
    max_latency_ms: float | None = Field(default=None, gt=0)
    context_tokens: int = Field(default=2048, ge=1, le=1_048_576)


class VizOptions(Strict):
    parents: bool = True
    rag: RagOptions | None = None
    route: RouteOptions | None = None
    repetition_penalty: float = Field(default=1.0, gt=0, le=10)


class StreamOptions(Strict):
    include_usage: bool = False
    include_obfuscation: bool = False  # true is refused (see options.sampling)


class JsonSchemaFormat(Strict):
    name: str = Field(default="answer", max_length=64)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(Strict):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class Function(Strict):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(Strict):
    type: Literal["function"]
    function: Function


class NamedFunction(Strict):
    name: str


class NamedTool(Strict):
    type: Literal["function"]
    function: NamedFunction


class CompletionBody(Strict):
    """What both completion endpoints take (see the README's table of OpenAI fields)."""

    model: str
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0, le=2)
    top_p: float = Field(default=1.0, gt=0, le=1)
    seed: int | None = Field(default=None, ge=-(2**63), le=2**63 - 1 - CHOICES_MAX)
    stop: str | list[str] | None = Field(default=None)
    n: int = Field(default=1, ge=1, le=CHOICES_MAX)
    stream: bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: float = Field(default=0.0, ge=-2, le=2)
    frequency_penalty: float = Field(default=0.0, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None
    user: str | None = Field(default=None, max_length=256)  # logged with the request
    viz: VizOptions = Field(default_factory=VizOptions)


class ChatBody(CompletionBody):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    response_format: ResponseFormat | None = None
    tools: list[Tool] | None = Field(default=None, max_length=TOOLS_MAX)
    tool_choice: Literal["none", "auto", "required"] | NamedTool | None = None
    parallel_tool_calls: bool = True
    # accepted, changing nothing in the answer (see the README's table):
    metadata: dict[str, str] | None = None
    store: bool | None = None  # true is refused: Viz stores no completions for later use
    service_tier: str | None = Field(default=None, max_length=32)  # auto / default only
    modalities: list[str] | None = Field(default=None, max_length=4)  # ["text"] only
    prompt_cache_key: str | None = Field(default=None, max_length=256)
    safety_identifier: str | None = Field(default=None, max_length=256)


class TextBody(CompletionBody):
    prompt: str = Field(max_length=TEXT_MAX)
    echo: bool = False
    logprobs: int | None = Field(default=None, ge=0, le=20)


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
