"""The API's routes: /v1/chat/completions, /v1/completions, /v1/models, /health, /metrics.

`api_router(server)` is mounted by the app (`viz.app.create_app`) beside the pages;
`RequestHeaders` gives every request an id and rate-limit headers.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from prometheus_client import generate_latest
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.background import BackgroundTask
from starlette.datastructures import MutableHeaders

from viz.market.hierarchy import visible_to
from viz.models.registry import list_base_models
from viz.serving.adapter_ref import parse_model
from viz.serving.call import Unanswerable, begin, caller
from viz.serving.embeddings import Embedders, EmbeddingBody, EmbeddingList, embed, embedder_card
from viz.serving.options import chat_messages
from viz.serving.protocol import (
    ANSWERS,
    ChatBody,
    Completion,
    CompletionBody,
    ModelCard,
    ModelList,
    TextBody,
)
from viz.serving.resolve import resolve
from viz.serving.responses import Kind, cannot_find, collect, replay, stream
from viz.serving.server import Server
from viz.store.database import session_scope
from viz.store.schema import Account, Adapter, AdapterVersion

__all__ = ["RequestHeaders", "api_router"]


# A completion is JSON, or with "stream": true server-sent events (OpenAI's chunks, then [DONE]).
COMPLETION_ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the completion, or its events when streamed",
        "model": Completion,  # application/json
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    },
    **ANSWERS,
}


def api_router(server: Server) -> APIRouter:
    """The OpenAI-compatible API over `server`'s database and engines."""
    router = APIRouter()
    embedders = Embedders()

    @router.get("/health")
    def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "engines": [
                {"base": base, "precision": precision, "running": e.running, "waiting": e.waiting}
                for (base, precision), e in server.engines.items()
            ],
            "engine": server.kind,
            "adapters_resident": server.adapters.resident() if server.adapters else [],
        }

    @router.get("/metrics", response_class=PlainTextResponse)
    def metrics() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(server.registry).decode())

    @router.get("/v1/models", response_model=ModelList, responses=ANSWERS)
    def models(authorization: str | None = Header(default=None)) -> dict[str, Any]:
        with session_scope(server.database) as session:
            cards = _models(session, caller(session, authorization), server)
            return {"object": "list", "data": cards}

    @router.get("/v1/models/{model_id:path}", response_model=ModelCard, responses=ANSWERS)
    def model(model_id: str, authorization: str | None = Header(default=None)) -> dict[str, Any]:
        with session_scope(server.database) as session:
            return _model(session, caller(session, authorization), model_id, server)

    @router.post("/v1/embeddings", response_model=EmbeddingList, responses=ANSWERS)
    async def embeddings(
        body: EmbeddingBody, request: Request, authorization: str | None = Header(default=None)
    ) -> dict[str, Any]:
        return await asyncio.to_thread(embed, server, embedders, request, body, authorization)

    @router.post("/v1/chat/completions", response_model=None, responses=COMPLETION_ANSWERS)
    async def chat(
        body: ChatBody,
        request: Request,
        authorization: str | None = Header(default=None),
        idempotency_key: str | None = Header(default=None),
    ) -> Any:
        messages = chat_messages(body.messages)
        return await complete(
            server, request, body, authorization, idempotency_key, messages=messages
        )

    @router.post("/v1/completions", response_model=None, responses=COMPLETION_ANSWERS)
    async def completions(
        body: TextBody,
        request: Request,
        authorization: str | None = Header(default=None),
        idempotency_key: str | None = Header(default=None),
    ) -> Any:
        return await complete(
            server, request, body, authorization, idempotency_key, prompt=body.prompt
        )

    return router


async def complete(
    server: Server,
    request: Request,
    body: CompletionBody,
    authorization: str | None,
    idempotency_key: str | None,
    *,
    messages: list[dict[str, Any]] | None = None,
    prompt: str | None = None,
) -> Any:
    """Begin the call (in a thread: it touches the database and the tokenizer), then answer
    with one JSON completion or a stream."""
    call = await asyncio.to_thread(
        begin, server, request, body, authorization, idempotency_key, messages, prompt
    )
    if isinstance(call, dict):  # a replay of an earlier answer (Idempotency-Key)
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return StreamingResponse(replay(call, include_usage), media_type="text/event-stream")
        return JSONResponse(call)
    if isinstance(call, Unanswerable):  # nothing to generate (viz.rag found nothing)
        return cannot_find(call, body.stream)
    kind: Kind = "chat" if messages is not None else "text"
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(
            stream(call, kind, include_usage),
            media_type="text/event-stream",
            headers={"x-request-id": request.state.request_id},
            background=BackgroundTask(call.abandon),  # no-op once the stream settled
        )
    answer = await asyncio.to_thread(collect, call, kind)
    ends = [job.finished_at for job in call.jobs if job.finished_at is not None]
    starts = [job.submitted_at for job in call.jobs]
    headers = {}
    if ends:
        call.timings["generate"] = max(ends) - min(starts)
        headers["x-viz-generation-ms"] = f"{call.timings['generate'] * 1e3:.1f}"
    # The standard Server-Timing header: each stage's milliseconds, for browsers and benchmarks.
    headers["server-timing"] = ", ".join(
        f"{stage};dur={seconds * 1e3:.2f}" for stage, seconds in call.timings.items()
    )
    return JSONResponse(answer, headers=headers)


def _model(session: Session, caller: Account, model_id: str, server: Server) -> dict[str, Any]:
    """One model: any id the list shows, or a composition (or bare adapter name) in its
    normalised form, with the versions it resolves to now.

    Raises:
        NotFound, Forbidden, InvalidInput: as a completion naming it would be answered.
    """
    for card in _models(session, caller, server):
        if card["id"] == model_id:
            return card
    resolved = resolve(session, parse_model(model_id), caller, parents=False)
    return {
        "id": resolved.model,
        "object": "model",
        "created": 0,
        "owned_by": "viz",
        "viz": {
            "kind": "composition",
            "base": resolved.base_id,
            "adapters": [{"id": use.label, "weight": use.weight} for use in resolved.uses],
        },
    }


def _models(session: Session, caller: Account, server: Server) -> list[dict[str, Any]]:
    """The bases, `auto`, the embedder, and the approved adapter versions `caller` may use."""
    data: list[dict[str, Any]] = [
        {
            "id": base.id,
            "object": "model",
            "created": int(base.created_at.timestamp()),
            "owned_by": "viz",
            "viz": {
                "kind": "base",
                "licence": base.licence,
                "provenance": base.provenance_class,  # verified for open-licensed-only
                "data_sources": base.provenance_sources,
                "parameters": base.parameter_count,
                "weights_sha256": base.weights_sha256,
            },
        }
        for base in list_base_models(session)
    ]
    data.append(
        {
            "id": "auto",
            "object": "model",
            "created": 0,
            "owned_by": "viz",
            "viz": {
                "kind": "recommender",
                "about": "chooses the base precision and adapter chain per request; "
                "size it with viz.route (hardware, budget, max_latency_ms)",
            },
        }
    )
    data.append(embedder_card(server.settings.embeddings_price))
    rows = session.execute(
        select(AdapterVersion, Adapter, Account.name)
        .join(Adapter, AdapterVersion.adapter_id == Adapter.id)
        .join(Account, Adapter.owner_id == Account.id)
        .where(AdapterVersion.status == "approved")
        .order_by(Adapter.name, AdapterVersion.id)
    )
    for version, adapter, owner in rows:
        if not visible_to(adapter, caller):
            continue
        data.append(
            {
                "id": f"{adapter.name}@{version.version}",
                "object": "model",
                "created": int(version.published_at.timestamp()),
                "owned_by": owner,
                "viz": {
                    "kind": "adapter",
                    "base": adapter.base_id,
                    "parent": adapter.parent.name if adapter.parent else None,
                    "licence": version.licence,
                    "price_in_micro_per_1k": version.price_in_micro,
                    "price_out_micro_per_1k": version.price_out_micro,
                },
            }
        )
    return data


class RequestHeaders:
    """Pure ASGI middleware (cheaper than `@app.middleware`): gives each request an id and puts
    `x-request-id` and `x-ratelimit-*` on its response."""

    def __init__(self, app: Any, server: Server) -> None:
        self.app = app
        self.server = server

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        state["request_id"] = f"req-{uuid.uuid4().hex}"

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["x-request-id"] = state["request_id"]  # an idempotency id if set
                if "ratelimit" in state:  # the account's requests this minute (all replicas)
                    limit, remaining, reset_s = state["ratelimit"]
                    headers["x-ratelimit-limit-requests"] = str(limit)
                    headers["x-ratelimit-remaining-requests"] = str(remaining)
                    headers["x-ratelimit-reset-requests"] = f"{reset_s:.0f}s"
                    if message["status"] == 429 and remaining == 0:
                        headers["retry-after"] = f"{max(1, round(reset_s))}"
                engines = [] if "ratelimit" in state else list(self.server.engines.values())
                for engine in engines[:1]:  # else: this process's queue
                    queue_max = engine.limits.queue_max
                    headers["x-ratelimit-limit-requests"] = str(queue_max)
                    headers["x-ratelimit-remaining-requests"] = str(
                        max(0, queue_max - engine.waiting)
                    )
            await send(message)

        await self.app(scope, receive, send_with_headers)
