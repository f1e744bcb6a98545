"""What a completion body asks for, read into what the engines take: the chat turns as plain
dicts (text parts joined), the sampling settings, and the JSON schema an answer must follow.

    messages = chat_messages(body.messages)
    settings = sampling(body, max_tokens_limit=2048, schema=answer_schema(body))

Everything the body asks for is honoured or refused here with a 400 that names the field:
nothing is silently ignored (the README's table lists every OpenAI field).
"""

from __future__ import annotations

import json
from typing import Any

from viz.errors import InvalidInput
from viz.models.generate import GenerationSettings
from viz.serving.protocol import ChatBody, CompletionBody, Message, TextBody

__all__ = ["SCHEMA_CHARS_MAX", "answer_schema", "chat_messages", "check_logit_bias", "sampling"]

SCHEMA_CHARS_MAX = 64 * 1024
ANY_OBJECT: dict[str, Any] = {"type": "object"}


def chat_messages(messages: list[Message]) -> list[dict[str, Any]]:
    """The turns as the chat template takes them: text parts joined by newlines; a
    `developer` turn is a system turn. Image, audio and file parts are refused, by type."""
    turns = []
    for index, message in enumerate(messages):
        turn: dict[str, Any] = {
            "role": "system" if message.role == "developer" else message.role,
            "content": _text(message.content, index),
        }
        if message.tool_calls:
            turn["tool_calls"] = [call.model_dump() for call in message.tool_calls]
        if message.tool_call_id is not None:
            turn["tool_call_id"] = message.tool_call_id
        if message.name is not None:
            turn["name"] = message.name
        if message.role == "tool" and message.tool_call_id is None:
            raise InvalidInput(
                f"messages[{index}] is a tool result without tool_call_id: name the call it "
                "answers (the id of an assistant turn's tool_calls entry)"
            )
        turns.append(turn)
    return turns


def _text(content: str | list[dict[str, Any]] | None, index: int) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    texts = []
    for part_index, part in enumerate(content):
        kind = part.get("type")
        where = f"messages[{index}].content[{part_index}]"
        if kind in ("text", "input_text"):
            if not isinstance(part.get("text"), str):
                raise InvalidInput(f"{where} is a text part without a 'text' string")
            texts.append(part["text"])
        elif kind == "refusal":
            texts.append(str(part.get("refusal", "")))
        else:
            raise InvalidInput(
                f"{where} is a {kind!r} part: Viz's bases read text only; send text parts "
                '({"type": "text", "text": "..."}) or a string'
            )
    return "\n".join(texts)


def sampling(
    body: CompletionBody, *, max_tokens_limit: int, schema: str | None = None
) -> GenerationSettings:
    """The body's sampling settings, checked (InvalidInput / LimitExceeded)."""
    _refuse_unsupported(body)
    newer = body.max_completion_tokens if isinstance(body, ChatBody) else None
    max_tokens = newer or body.max_tokens or min(256, max_tokens_limit)
    stop = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
    logprobs = prompt_logprobs = None
    if isinstance(body, ChatBody):
        if body.top_logprobs is not None and not body.logprobs:
            raise InvalidInput("top_logprobs needs logprobs: true")
        logprobs = (body.top_logprobs or 0) if body.logprobs else None
    elif isinstance(body, TextBody):
        logprobs = body.logprobs
        prompt_logprobs = body.logprobs if body.echo else None
    settings = GenerationSettings(
        max_tokens,
        body.temperature,
        body.top_p,
        body.seed,
        stop,
        presence_penalty=body.presence_penalty,
        frequency_penalty=body.frequency_penalty,
        repetition_penalty=body.viz.repetition_penalty,
        logit_bias=_logit_bias(body.logit_bias),
        logprobs=logprobs,
        prompt_logprobs=prompt_logprobs,
        json_schema=schema,
    )
    settings.check(max_tokens_limit=max_tokens_limit)
    return settings


def check_logit_bias(settings: GenerationSettings, vocabulary_size: int) -> None:
    """Raise InvalidInput for a logit_bias token id outside the model's vocabulary."""
    outside = [token for token, _ in settings.logit_bias if token >= vocabulary_size]
    if outside:
        raise InvalidInput(
            f"logit_bias names token id(s) {outside[:5]} outside this model's vocabulary "
            f"(0-{vocabulary_size - 1})"
        )


def _logit_bias(bias: dict[str, float] | None) -> tuple[tuple[int, float], ...]:
    pairs = []
    for key, value in (bias or {}).items():
        if not (key.isascii() and key.isdigit()):  # not '¹': int() refuses it
            raise InvalidInput(
                f"logit_bias key {key[:40]!r} is not a token id: keys are token ids as strings"
            )
        pairs.append((int(key), float(value)))
    return tuple(sorted(pairs))


def _refuse_unsupported(body: CompletionBody) -> None:
    """Values of accepted fields that Viz cannot honour."""
    if body.stream_options is not None and body.stream_options.include_obfuscation:
        raise InvalidInput("stream_options.include_obfuscation: stream obfuscation is not offered")
    if not isinstance(body, ChatBody):
        return
    if body.store:
        raise InvalidInput("store: true is not supported: Viz keeps no completions for later use")
    if body.service_tier not in (None, "auto", "default"):
        raise InvalidInput(
            f"service_tier {body.service_tier!r} is not offered; use auto or default"
        )
    if body.modalities and set(body.modalities) != {"text"}:
        raise InvalidInput('modalities: Viz generates text only; send ["text"] or omit it')


def answer_schema(body: ChatBody) -> str | None:
    """The JSON schema `response_format` asks the answer to follow, as canonical JSON text
    (json_object: any object); None for plain text."""
    fmt = body.response_format
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return canonical(ANY_OBJECT)
    if fmt.json_schema is None or fmt.json_schema.schema_ is None:
        raise InvalidInput(
            'response_format json_schema needs {"json_schema": {"name": ..., "schema": {...}}}'
        )
    return canonical(fmt.json_schema.schema_, what="response_format.json_schema.schema")


def canonical(schema: dict[str, Any], *, what: str = "schema") -> str:
    """`schema` as compact JSON text with sorted keys (a cache key), within SCHEMA_CHARS_MAX."""
    text = json.dumps(schema, sort_keys=True, separators=(",", ":"))
    if len(text) > SCHEMA_CHARS_MAX:
        raise InvalidInput(f"{what} is {len(text)} characters; the limit is {SCHEMA_CHARS_MAX}")
    return text
