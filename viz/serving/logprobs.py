"""Log-probabilities in OpenAI's shapes: chat's `logprobs.content` entries (token, logprob,
UTF-8 bytes, top alternatives) and legacy completions' parallel lists (tokens, token_logprobs,
top_logprobs, text_offset).

A token's text is its exact bytes: a byte-level BPE token that holds part of a multi-byte
character is shown with backslash escapes (as OpenAI does), its `bytes` complete the character.

    texts = TokenTexts(tokenizer)
    {"content": chat_entries(texts, generation.scored, top=2)}
    text_logprobs(texts, generation.scored, top=2, offset=0)
"""

from __future__ import annotations

from typing import Any

from viz.models.sampling import Scored

__all__ = ["TokenTexts", "chat_entries", "text_logprobs"]


class TokenTexts:
    """Each token id's text and UTF-8 bytes, for one tokenizer (cached as they are asked)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self._known: dict[int, tuple[str, list[int]]] = {}
        self._bytes_of = _byte_level_alphabet()

    def of(self, token: int) -> tuple[str, list[int]]:
        known = self._known.get(token)
        if known is None:
            raw = self.tokenizer.convert_ids_to_tokens(token)
            if raw is not None and raw and all(char in self._bytes_of for char in raw):
                data = bytes(self._bytes_of[char] for char in raw)
            else:
                data = self.tokenizer.decode([token]).encode()
            known = self._known[token] = (data.decode("utf-8", "backslashreplace"), list(data))
        return known


def _byte_level_alphabet() -> dict[str, int]:
    """How byte-level BPE (GPT-2, SmolLM2, Llama 3) spells each byte as a character, inverted:
    printable bytes stand for themselves, the others for characters from U+0100 on."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("\u00a1"), ord("\u00ac") + 1),
        *range(ord("\u00ae"), ord("\u00ff") + 1),
    ]
    alphabet = {chr(byte): byte for byte in printable}
    shifted = 0
    for byte in range(256):
        if byte not in printable:
            alphabet[chr(256 + shifted)] = byte
            shifted += 1
    return alphabet


def chat_entries(texts: TokenTexts, scored: list[Scored], *, top: int) -> list[dict[str, Any]]:
    """Chat's `choices[].logprobs.content`: one entry per token."""
    entries = []
    for entry in scored:
        text, data = texts.of(entry.token)
        alternatives = []
        for token, logprob in entry.top[:top]:
            other, other_bytes = texts.of(token)
            alternatives.append({"token": other, "logprob": logprob, "bytes": other_bytes})
        entries.append(
            {"token": text, "logprob": entry.logprob, "bytes": data, "top_logprobs": alternatives}
        )
    return entries


def text_logprobs(
    texts: TokenTexts,
    scored: list[Scored],
    *,
    top: int,
    offset: int = 0,
    first: int | None = None,
) -> dict[str, Any]:
    """Legacy completions' `choices[].logprobs` for `scored`, whose text starts at character
    `offset`; `first`: an echoed prompt's first token id, which has no log-probability."""
    tokens: list[str] = []
    values: list[float | None] = []
    tops: list[dict[str, float] | None] = []
    offsets: list[int] = []
    if first is not None:
        tokens.append(texts.of(first)[0])
        values.append(None)
        tops.append(None)
    for entry in scored:
        tokens.append(texts.of(entry.token)[0])
        values.append(entry.logprob)
        tops.append({texts.of(token)[0]: logprob for token, logprob in entry.top[:top]})
    for token in tokens:
        offsets.append(offset)
        offset += len(token)
    return {
        "tokens": tokens,
        "token_logprobs": values,
        "top_logprobs": tops,
        "text_offset": offsets,
    }
