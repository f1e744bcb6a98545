"""Constrained decoding: a JSON schema compiled (llguidance) into a matcher that, at each step,
says which tokens may come next, so the answer always parses and validates.

llguidance was chosen by measurement on a 2-core CPU (bench/results/grammar/choice.md): its
per-token mask is computed lazily over a token trie, needs no precompiled per-vocabulary
tables, and its JSON-schema compiler names the construct it cannot take.

    check_schema(schema_text)                     # a 400 before anything is reserved
    matcher = Matcher(tokenizer, schema_text, stop_ids)
    logits = matcher.mask(logits)                 # -inf outside what the grammar allows
    done = matcher.advance(token)                 # True once the document is complete

JSON is generated compact (no free whitespace), so a small model cannot wander in blanks.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

from viz.errors import InvalidInput, VizError

__all__ = ["Matcher", "check_schema"]

_COMPILE = {"whitespace_flexible": False}
_lock = threading.Lock()
_tokenizers: dict[tuple[int, tuple[int, ...]], tuple[Any, Any]] = {}


def check_schema(schema: str) -> str:
    """The llguidance grammar of JSON schema `schema` (JSON text), cached.

    Raises:
        InvalidInput: the schema is not valid JSON or uses a construct the grammar compiler
            cannot take (the message names it).
    """
    return _grammar(schema)


@functools.lru_cache(maxsize=256)
def _grammar(schema: str) -> str:
    from llguidance import LLMatcher  # deferred: only constrained requests need it

    try:
        grammar = LLMatcher.grammar_from_json_schema(schema, overrides=_COMPILE)  # type: ignore[arg-type]
        failed, messages = LLMatcher.validate_grammar_with_warnings(grammar)
    except Exception as error:  # noqa: BLE001 - the compiler's own refusal, whatever its class
        raise InvalidInput(
            f"the JSON schema cannot be used for constrained decoding: {error}"
        ) from error
    if failed:
        raise InvalidInput(
            f"the JSON schema cannot be used for constrained decoding: {messages[0]}; simplify "
            "that part of the schema"
        )
    return grammar


def _lltokenizer(tokenizer: Any, stop_ids: tuple[int, ...]) -> Any:
    """llguidance's view of `tokenizer` (about a second to build: once per tokenizer)."""
    key = (id(tokenizer), stop_ids)
    with _lock:
        found = _tokenizers.get(key)
        if found is None or found[0] is not tokenizer:
            from llguidance.hf import from_tokenizer  # deferred: only constrained requests

            eos = list(stop_ids) or None
            found = _tokenizers[key] = (tokenizer, from_tokenizer(tokenizer, eos_token=eos))
        return found[1]


class Matcher:
    """One answer's progress through its grammar; used by one decoding row at a time."""

    def __init__(self, tokenizer: Any, schema: str, stop_ids: set[int] | tuple[int, ...]) -> None:
        from llguidance import LLMatcher  # deferred: only constrained requests need it

        self.stop_ids = tuple(sorted(stop_ids))
        self._matcher = LLMatcher(_lltokenizer(tokenizer, self.stop_ids), check_schema(schema))
        if self._matcher.is_error():
            raise InvalidInput(f"the JSON schema cannot be used: {self._matcher.get_error()}")

    def mask(self, logits: Any) -> Any:
        """`logits` with every token the grammar forbids next set to -inf."""
        import torch  # deferred: torch is heavy

        allowed = torch.frombuffer(bytearray(self._matcher.compute_logit_bias()), dtype=torch.uint8)
        size = min(allowed.numel(), logits.shape[-1])
        keep = torch.zeros(logits.shape[-1], dtype=torch.bool)
        keep[:size] = allowed[:size] > 0
        return logits.float().masked_fill(~keep, float("-inf"))

    def advance(self, token: int) -> bool:
        """Consume the sampled `token`; True when the document is complete (nothing but an
        end-of-turn may follow).

        Raises:
            VizError: the token broke the grammar (it cannot, when sampled after `mask`).
        """
        if token in self.stop_ids:
            return True
        if not self._matcher.consume_token(token):
            raise VizError(f"constrained decoding failed: {self._matcher.get_error()}")
        return self._matcher.is_stopped()
