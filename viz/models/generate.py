"""Generation: chat template in, tokens streamed out, stopped cleanly.

A plain decoding loop with a KV cache (no `model.generate`), so every caller (CLI, API, later the
multi-adapter engine) gets the same control over stopping: generation ends at any end-of-turn
token the tokenizer knows (`<|im_end|>`, `<|endoftext|>`, the config's eos ids) or at the first
stop string, which is cut from the output, and text that might be the start of a stop string is
held back until it is known not to be. Answers never ramble past their end into a new turn.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from viz.errors import InvalidInput, LimitExceeded
from viz.models.sampling import adjust, sample

__all__ = [
    "GenerationSettings",
    "TextTracker",
    "TokenStream",
    "chat_prompt_ids",
    "generate_text",
    "sample",
    "text_prompt_ids",
]

END_OF_TURN_TOKENS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "</s>", "<|im_start|>")
STOP_STRINGS_MAX = 4  # OpenAI's
STOP_STRING_CHARS_MAX = 64
LOGIT_BIAS_MAX = 300  # entries
TOP_LOGPROBS_MAX = 20


@dataclass(frozen=True)
class GenerationSettings:
    """How to sample: temperature 0 means greedy (deterministic). Penalties and bias follow
    OpenAI's definitions (`viz.models.sampling`); `logprobs` is how many alternatives to report
    with each token's log-probability (None: report none); `json_schema` (canonical JSON text)
    constrains the answer to a JSON document that validates against it."""

    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    logit_bias: tuple[tuple[int, float], ...] = ()
    logprobs: int | None = None
    prompt_logprobs: int | None = None  # echo with logprobs: the prompt's tokens scored too
    json_schema: str | None = None

    def check(self, *, max_tokens_limit: int) -> None:
        """Raise InvalidInput / LimitExceeded naming every bad field at once."""
        problems = []
        for name in ("presence_penalty", "frequency_penalty"):
            if not -2.0 <= getattr(self, name) <= 2.0:
                problems.append(f"{name} is {getattr(self, name)}; use -2 to 2")
        if not 0.0 < self.repetition_penalty <= 10.0:
            problems.append(
                f"repetition_penalty is {self.repetition_penalty}; use a value in (0, 10] "
                "(1 is none, above 1 discourages repeats)"
            )
        if len(self.logit_bias) > LOGIT_BIAS_MAX:
            problems.append(
                f"logit_bias has {len(self.logit_bias)} entries; at most {LOGIT_BIAS_MAX}"
            )
        if any(not -100.0 <= bias <= 100.0 for _, bias in self.logit_bias):
            problems.append("logit_bias values must be -100 to 100")
        for name in ("logprobs", "prompt_logprobs"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= TOP_LOGPROBS_MAX:
                problems.append(f"{name} is {value}; use 0 to {TOP_LOGPROBS_MAX}")
        if self.max_tokens < 1:
            problems.append(f"max_tokens is {self.max_tokens}; it must be at least 1")
        if not 0.0 <= self.temperature <= 2.0:
            problems.append(f"temperature is {self.temperature}; use 0 (greedy) to 2")
        if not 0.0 < self.top_p <= 1.0:
            problems.append(f"top_p is {self.top_p}; use a value in (0, 1]")
        if len(self.stop) > STOP_STRINGS_MAX:
            problems.append(f"{len(self.stop)} stop strings; the maximum is {STOP_STRINGS_MAX}")
        if any(not s or len(s) > STOP_STRING_CHARS_MAX for s in self.stop):
            problems.append(f"stop strings must be 1-{STOP_STRING_CHARS_MAX} characters")
        if problems:
            raise InvalidInput("; ".join(problems))
        if self.max_tokens > max_tokens_limit:
            raise LimitExceeded(
                f"max_tokens {self.max_tokens} is over the limit of {max_tokens_limit} "
                "(set VIZ_GENERATE_TOKENS_MAX to raise it)"
            )


def chat_prompt_ids(
    tokenizer: Any,
    messages: Sequence[dict[str, Any]],
    *,
    prompt_tokens_max: int,
    chat_template: str | None = None,
    tools: list[dict[str, Any]] | None = None,
) -> list[int]:
    """Token ids of `messages` rendered with the tokenizer's chat template (or
    `chat_template`), with `tools` for templates that take them.

    Raises:
        InvalidInput: no messages, or an unknown role.
        LimitExceeded: the rendered prompt is longer than `prompt_tokens_max`.
    """
    if not messages:
        raise InvalidInput("no messages to answer; give a question")
    roles = {"system", "user", "assistant", "tool"}
    bad = [m.get("role") for m in messages if m.get("role") not in roles]
    if bad:
        raise InvalidInput(f"message role(s) {bad} not one of {sorted(roles)}")
    try:
        ids = tokenizer.apply_chat_template(
            list(messages),
            add_generation_prompt=True,
            tokenize=True,
            chat_template=chat_template,
            tools=tools,
        )
    except Exception as error:  # noqa: BLE001 - templates raise their own errors on bad turns
        raise InvalidInput(
            f"the model's chat template refused these messages: {error}; check the roles "
            "(system first, then user and assistant alternating)"
        ) from error
    if hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return _within_limit(list(ids), prompt_tokens_max)


def text_prompt_ids(tokenizer: Any, prompt: str, *, prompt_tokens_max: int) -> list[int]:
    """Token ids of a raw text prompt (no chat template), for plain completions.

    Raises:
        InvalidInput: the prompt is empty.
        LimitExceeded: it is longer than `prompt_tokens_max` tokens.
    """
    ids = list(tokenizer(prompt)["input_ids"])
    if not ids:
        raise InvalidInput("prompt is empty; give some text to continue")
    return _within_limit(ids, prompt_tokens_max)


def _within_limit(ids: list[int], prompt_tokens_max: int) -> list[int]:
    if len(ids) > prompt_tokens_max:
        raise LimitExceeded(
            f"prompt is {len(ids)} tokens; the limit is {prompt_tokens_max} "
            "(shorten it or set VIZ_PROMPT_TOKENS_MAX)"
        )
    return ids


@dataclass
class TextTracker:
    """Turns sampled token ids into the text safe to show: stops at an end-of-turn token or a
    stop string (cut from the text), holds back text that may begin a stop string, and waits
    while a multi-byte character is split across tokens. Shared by `TokenStream` and the
    serving engine, so both stop exactly alike."""

    tokenizer: Any
    stops: Sequence[str]
    stop_ids: set[int]
    text: str = ""
    completion_tokens: int = 0
    _generated: list[int] = field(default_factory=list)
    _emitted: int = 0

    @property
    def generated(self) -> list[int]:
        """The answer's token ids so far (end-of-turn tokens excluded)."""
        return self._generated

    def push(self, token: int) -> tuple[str, bool]:
        """Record `token`; return (new text to show, whether the answer has ended)."""
        if token in self.stop_ids:
            return self.rest(), True
        self._generated.append(token)
        self.completion_tokens += 1
        text = self.tokenizer.decode(self._generated, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            return "", False  # a multi-byte character is split across tokens: wait for the rest
        cut = _find_stop(text, self.stops, self._emitted)
        if cut is not None:
            self.text = text[:cut]
            return self.rest(), True
        self.text = text
        safe = len(text) - _held_back(text, self.stops)
        if safe <= self._emitted:
            return "", False
        piece = text[self._emitted : safe]
        self._emitted = safe
        return piece, False

    def rest(self) -> str:
        """The text not shown yet (what was held back), once the answer has ended."""
        piece = self.text[self._emitted :]
        self._emitted = len(self.text)
        return piece


@dataclass
class TokenStream:
    """Iterate to receive text pieces as they are generated; then read the totals.

    `finish_reason` is "stop" (end of turn or stop string) or "length" (max_tokens reached).
    """

    model: Any
    tokenizer: Any
    prompt_ids: list[int]
    settings: GenerationSettings
    text: str = ""
    completion_tokens: int = 0
    finish_reason: str | None = None

    @property
    def prompt_tokens(self) -> int:
        return len(self.prompt_ids)

    def __iter__(self) -> Iterator[str]:
        # deferred: torch is heavy
        import torch

        assert self.finish_reason is None, "a TokenStream can be iterated once"
        tracker = TextTracker(
            self.tokenizer, self.settings.stop, end_of_turn_ids(self.model, self.tokenizer)
        )
        generator = None
        if self.settings.seed is not None:
            generator = torch.Generator().manual_seed(self.settings.seed)
        device = next(self.model.parameters()).device
        next_input = torch.tensor([self.prompt_ids], device=device)
        past = None
        with torch.inference_mode():
            for _ in range(self.settings.max_tokens):
                output = self.model(input_ids=next_input, cache=past, use_cache=True)
                past = output.cache
                logits = adjust(
                    output.logits[0, -1], self.settings, self.prompt_ids, tracker.generated
                )
                token = sample(logits, self.settings, generator)
                piece, ended = tracker.push(token)
                self.text, self.completion_tokens = tracker.text, tracker.completion_tokens
                if piece:
                    yield piece
                if ended:
                    self.finish_reason = "stop"
                    break
                next_input = torch.tensor([[token]], device=device)
            else:
                self.finish_reason = "length"
        piece = tracker.rest()
        if piece:
            yield piece


def generate_text(
    model: Any,
    tokenizer: Any,
    messages: Sequence[dict[str, str]],
    settings: GenerationSettings,
    *,
    prompt_tokens_max: int = 4096,
    max_tokens_limit: int = 2048,
) -> TokenStream:
    """Check the request and return a stream; nothing runs until it is iterated.

    >>> stream = generate_text(model, tokenizer, [{"role": "user", "content": "Hi"}], settings)
    >>> answer = "".join(stream)
    """
    settings.check(max_tokens_limit=max_tokens_limit)
    ids = chat_prompt_ids(tokenizer, messages, prompt_tokens_max=prompt_tokens_max)
    return TokenStream(model, tokenizer, ids, settings)


def end_of_turn_ids(model: Any, tokenizer: Any) -> set[int]:
    """Every token id that ends an assistant turn for this model and tokenizer."""
    ids: set[int] = set()
    for source in (model.config, getattr(model, "generation_config", None)):
        value = getattr(source, "eos_token_id", None)
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list | tuple):
            ids.update(v for v in value if isinstance(v, int))
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    vocabulary = tokenizer.get_vocab()
    ids.update(vocabulary[token] for token in END_OF_TURN_TOKENS if token in vocabulary)
    return ids


def _find_stop(text: str, stops: Sequence[str], emitted: int) -> int | None:
    """Index where the earliest stop string starts in `text`, searching only new text."""
    positions = []
    for stop in stops:
        index = text.find(stop, max(0, emitted - len(stop) + 1))
        if index >= 0:
            positions.append(index)
    return min(positions) if positions else None


def _held_back(text: str, stops: Sequence[str]) -> int:
    """How many trailing characters of `text` could begin a stop string."""
    longest = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:size]):
                longest = size
                break
    return longest
