"""The answers: OpenAI JSON completions, SSE streams, the "cannot find" answer, error bodies.

A stream settles in its `finally`, so a client that disconnects pays for the tokens already
streamed; an error after the first byte is sent as one `data: {"error": ...}` event.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any, Literal

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse

from viz.errors import VizError
from viz.models.sampling import Scored
from viz.rag.answer import CANNOT_FIND
from viz.serving.call import Call, Unanswerable
from viz.serving.engines import Generation
from viz.serving.grounding import Grounding
from viz.serving.logprobs import chat_entries, text_logprobs
from viz.serving.tools import parse_calls

__all__ = ["Kind", "cannot_find", "collect", "completion", "error_response", "replay", "stream"]

log = logging.getLogger("viz.serving")
Kind = Literal["chat", "text"]


def collect(call: Call, kind: Kind) -> dict[str, Any]:
    """Wait for every choice and answer with one JSON completion (settling the call, and
    storing the answer for its Idempotency-Key in the same transaction)."""
    texts = []
    try:
        for job in call.jobs:
            texts.append("".join(job.pieces()))
    except VizError:
        call.abandon()  # the client gets an error, not the text: nothing to charge
        raise
    if call.grounding is not None:
        texts = [call.grounding.cite(text) for text in texts]
    tokens = sum(job.completion_tokens for job in call.jobs)
    answer = completion(call, kind, texts, tokens)
    call.finish(tokens=tokens, answer=answer)
    return answer


def completion(call: Call, kind: Kind, texts: list[str], tokens: int) -> dict[str, Any]:
    """The OpenAI completion object of `call`'s choices (`texts`, one per job)."""
    choices = []
    for index, (job, text) in enumerate(zip(call.jobs, texts, strict=True)):
        reason = _finish_reason(job)
        if kind == "chat":
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if call.tools is not None:
                message["content"], calls = parse_calls(text, call.tools)
                if calls:
                    message["tool_calls"], reason = calls, "tool_calls"
            logprobs = _chat_logprobs(call, job.scored)
            choices.append(
                {"index": index, "message": message, "finish_reason": reason, "logprobs": logprobs}
            )
        else:
            echoed = (call.echo or "") + text
            logprobs = _text_logprobs(call, job, echo=call.echo is not None)
            choices.append(
                {"index": index, "text": echoed, "finish_reason": reason, "logprobs": logprobs}
            )
    return {
        "id": call.request_id,
        "object": "chat.completion" if kind == "chat" else "text_completion",
        "created": int(time.time()),
        "model": call.resolved.model,
        "choices": choices,
        "usage": _usage(call, tokens),
        **_viz_fields(call.grounding, call.route),
    }


async def replay(answer: dict[str, Any], include_usage: bool) -> AsyncIterator[str]:
    """A stored answer (an Idempotency-Key's) as the SSE events of a stream: each choice whole."""
    chat = answer["object"] == "chat.completion"
    common = {
        "id": answer["id"],
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": answer["created"],
        "model": answer["model"],
    }

    def event(choices: list[dict[str, Any]], **extra: Any) -> str:
        return f"data: {json.dumps({**common, 'choices': choices, **extra})}\n\n"

    for choice in answer["choices"]:
        index, reason, logprobs = choice["index"], choice["finish_reason"], choice["logprobs"]
        if chat:
            message = choice["message"]
            delta = {"role": "assistant", "content": message["content"]}
            if message.get("tool_calls"):
                delta["tool_calls"] = [
                    {"index": n, **call} for n, call in enumerate(message["tool_calls"])
                ]
            first = {"index": index, "delta": delta, "finish_reason": None, "logprobs": logprobs}
            yield event([first])
            yield event([{"index": index, "delta": {}, "finish_reason": reason}])
        else:
            first = {"index": index, "text": choice["text"], "finish_reason": None}
            yield event([{**first, "logprobs": logprobs}])
            yield event([{"index": index, "text": "", "finish_reason": reason}])
    extra = {k: answer[k] for k in ("citations", "viz") if k in answer}
    if extra:
        yield event([], **extra)
    if include_usage:
        yield event([], usage=answer["usage"])
    yield "data: [DONE]\n\n"


class _Events:
    """The SSE events of one streamed completion."""

    def __init__(self, call: Call, kind: Kind) -> None:
        self.call, self.kind, self.created = call, kind, int(time.time())

    def chunk(
        self,
        index: int,
        text: str | None,
        reason: str | None,
        first: bool = False,
        logprobs: dict[str, Any] | None = None,
        tool_calls: list[dict[str, Any]] | None = None,
    ) -> str:
        if self.kind == "chat":
            delta: dict[str, Any] = {"role": "assistant", "content": ""} if first else {}
            if text:
                delta["content"] = text
            if tool_calls:
                delta["tool_calls"] = tool_calls
            choice: dict[str, Any] = {"index": index, "delta": delta, "finish_reason": reason}
        else:
            choice = {"index": index, "text": text or "", "finish_reason": reason}
        if logprobs is not None:
            choice["logprobs"] = logprobs
        return self.event([choice])

    def event(self, choices: list[dict[str, Any]], **extra: Any) -> str:
        payload = {
            "id": self.call.request_id,
            "object": "chat.completion.chunk" if self.kind == "chat" else "text_completion",
            "created": self.created,
            "model": self.call.resolved.model,
            "choices": choices,
            **extra,
        }
        return f"data: {json.dumps(payload)}\n\n"


async def stream(call: Call, kind: Kind, include_usage: bool) -> AsyncIterator[str]:
    """The choices as SSE events, one after another, then the viz fields, usage and [DONE]."""
    events = _Events(call, kind)
    failed = True
    sent = 0  # tokens of the choices streamed so far: what a client that leaves pays for
    current: Generation | None = None  # the choice streaming now: its tokens so far are sent
    failure: dict[str, Any] | None = None
    texts: list[str] = []  # each choice as sent: the answer an Idempotency-Key replays
    interval = call.server.settings.progress_interval_s
    try:
        for index, job in enumerate(call.jobs):
            current = job
            if kind == "chat":
                yield events.chunk(index, None, None, first=True)
            elif call.echo is not None:  # the prompt first, scored from its second token
                logprobs = _text_logprobs(call, job, echo=True, generated=False)
                yield events.chunk(index, call.echo, None, logprobs=logprobs)
            pieces: Iterator[str] = job.pieces()
            text, given = "", 0  # given: the tokens whose logprobs were sent
            while True:
                piece = await asyncio.to_thread(next, pieces, None)
                if piece is None:
                    break
                text += piece
                if call.tools is None:  # a tool call is known once the choice is whole
                    logprobs, given = _logprobs_since(
                        call, job, kind, given, len(text) - len(piece)
                    )
                    yield events.chunk(index, piece, None, logprobs=logprobs)
                if time.monotonic() - call.progressed >= interval:  # what a crash would settle
                    await asyncio.to_thread(call.progress, sent + job.completion_tokens)
            reason = _finish_reason(job)
            if call.tools is not None:
                content, calls = parse_calls(text, call.tools)
                logprobs, given = _logprobs_since(call, job, kind, given, 0)
                deltas = [{"index": n, **tool_call} for n, tool_call in enumerate(calls)]
                yield events.chunk(
                    index, content, None, logprobs=logprobs, tool_calls=deltas or None
                )
                reason = "tool_calls" if calls else reason
            if call.grounding is not None:
                marked = call.grounding.cite(text)
                if len(marked) > len(text.strip()):  # an attributed source's marker
                    yield events.chunk(index, marked[len(text.strip()) :], None)
                    text += marked[len(text.strip()) :]
            texts.append(text)
            sent += job.completion_tokens
            current = None
            yield events.chunk(index, None, reason)
        failed = False
    except VizError as error:
        failure = {
            "error": {"message": error.message, "type": "server_error", "param": None, "code": None}
        }
    finally:
        # Runs also when the client went away (the task is being cancelled, so nothing here may
        # await): stop generating and settle, synchronously, the tokens already streamed.
        tokens = _settle_stream(call, kind, failed, sent, current, texts)
    if failure is not None:  # settled first: the client may act on the error at once
        yield f"data: {json.dumps(failure)}\n\n"
    extra = _viz_fields(call.grounding, call.route)
    if extra:
        yield events.event([], **extra)
    if include_usage:
        yield events.event([], usage=_usage(call, tokens))
    yield "data: [DONE]\n\n"


def _settle_stream(
    call: Call,
    kind: Kind,
    failed: bool,
    sent: int,
    streaming: Generation | None,
    texts: list[str],
) -> int:
    """Stop every generation and settle what was delivered (all of it, unless the stream
    failed or was left: the choices streamed whole plus what `streaming`, the one streaming
    then, had sent; an engine that failed mid-choice still counts what it sent); returns it.
    A whole stream's answer (`texts`) is stored for its Idempotency-Key as it settles."""
    for job in call.jobs:
        job.cancel()
    delivered = (
        sum(j.completion_tokens for j in call.jobs)
        if not failed
        else sent + (streaming.completion_tokens if streaming is not None else 0)
    )
    answer = None if failed else completion(call, kind, texts, delivered)
    try:
        return call.finish(failed=failed, tokens=delivered, answer=answer)
    except VizError as error:  # never lose the stream's end over a ledger refusal
        log.error(json.dumps({"request_id": call.request_id, "settle_error": error.message}))
        return delivered


def cannot_find(found: Unanswerable, stream: bool) -> JSONResponse | StreamingResponse:
    """The answer when retrieval found nothing relevant: no generation, no charge."""
    common = {"id": found.request_id, "created": int(time.time()), "model": found.model}
    usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    fields = _viz_fields(found.grounding, found.route)
    if not stream:
        message = {"role": "assistant", "content": CANNOT_FIND}
        choice = {"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}
        return JSONResponse(
            {**common, "object": "chat.completion", "choices": [choice], "usage": usage, **fields}
        )

    async def events() -> AsyncIterator[str]:
        for delta, reason, extra in [
            ({"role": "assistant", "content": CANNOT_FIND}, None, {}),
            ({}, "stop", {}),
            (None, None, {**fields, "usage": usage}),
        ]:
            choices = (
                [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": reason}]
            )
            payload = {**common, "object": "chat.completion.chunk", "choices": choices, **extra}
            yield f"data: {json.dumps(payload)}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


def error_response(request: Request, error: VizError, *, param: str | None = None) -> JSONResponse:
    """The OpenAI error body and status of `error`, as `viz.errors` defines them per class."""
    code = error.openai_code
    param = param or getattr(error, "param", None)
    if param is not None and param.startswith("viz.") and code == "model_not_found":
        code = None  # a missing collection or reranker, not a model
    body = {
        "error": {"message": error.message, "type": error.openai_type, "param": param, "code": code}
    }
    headers = {"x-request-id": getattr(request.state, "request_id", "")}
    return JSONResponse(body, status_code=error.http_status, headers=headers)


def _viz_fields(grounding: Grounding | None, route: dict[str, Any] | None) -> dict[str, Any]:
    """`citations` (the sources the answer cites), `viz.rag` (how they were found) and
    `viz.route` (what the recommender chose for `model: "auto"`, and why)."""
    fields: dict[str, Any] = {}
    viz: dict[str, Any] = {}
    if grounding is not None:
        fields["citations"] = grounding.citations()
        viz["rag"] = grounding.summary()
    if route is not None:
        viz["route"] = route
    if viz:
        fields["viz"] = viz
    return fields


def _chat_logprobs(call: Call, scored: list[Scored]) -> dict[str, Any] | None:
    top = call.options.logprobs
    if top is None or call.token_texts is None:
        return None
    return {"content": chat_entries(call.token_texts, scored, top=top)}


def _text_logprobs(
    call: Call, job: Generation, *, echo: bool, generated: bool = True
) -> dict[str, Any] | None:
    """A text choice's logprobs: the echoed prompt's (if `echo`), then the answer's."""
    top = call.options.logprobs
    if top is None or call.token_texts is None:
        return None
    texts = call.token_texts
    scored = job.scored if generated else []
    if echo:
        prompt = text_logprobs(texts, job.prompt_scored, top=top, first=call.prompt_ids[0])
        if not generated:
            return prompt
        rest = text_logprobs(texts, scored, top=top, offset=len(call.echo or ""))
        return {key: prompt[key] + rest[key] for key in prompt}
    return text_logprobs(texts, scored, top=top)


def _logprobs_since(
    call: Call, job: Generation, kind: Kind, given: int, offset: int
) -> tuple[dict[str, Any] | None, int]:
    """The logprobs of the tokens scored since `given` (for a streamed chunk), and the new
    count; the text ones start at character `offset` of the answer."""
    top = call.options.logprobs
    if top is None or call.token_texts is None:
        return None, given
    fresh = job.scored[given:]
    if kind == "chat":
        return {"content": chat_entries(call.token_texts, fresh, top=top)}, given + len(fresh)
    start = offset + len(call.echo or "")
    return text_logprobs(call.token_texts, fresh, top=top, offset=start), given + len(fresh)


def _finish_reason(job: Generation) -> str:
    """OpenAI's reason: "length" at max_tokens, else "stop"."""
    return "length" if job.finish_reason == "length" else "stop"


def _usage(call: Call, tokens: int) -> dict[str, int]:
    prompt = len(call.prompt_ids)
    return {"prompt_tokens": prompt, "completion_tokens": tokens, "total_tokens": prompt + tokens}
