"""Chunking documents for retrieval: by characters (respecting paragraphs and sentences) or by
tokens, with overlap, every chunk keeping its offsets in the original text.

Offsets matter twice: a citation points at the exact span a chunk came from, and evaluation
decides whether a chunk holds gold evidence by comparing spans.

The character chunker packs whole sentences up to `size` characters and ends a chunk at a
paragraph end (a blank line) when one falls in its second half; a sentence longer than `size` is
cut at the last whitespace before the limit. The next chunk starts `overlap` characters or less
before the previous one ended, at the start of a whole sentence.

    chunks = chunk_by_characters(text, size=1200, overlap=200)
    text[chunks[0].start : chunks[0].end] == chunks[0].text
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from viz.errors import InvalidInput

__all__ = ["Chunk", "chunk_by_characters", "chunk_by_tokens", "check_sizes"]

SIZE_MAX = 100_000
_PARAGRAPH = re.compile(r"\n[ \t]*\n+")
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[A-Z0-9\"'(\[])")


@dataclass(frozen=True)
class Chunk:
    """`text` is `document[start:end]`; `index` counts chunks within the document."""

    index: int
    start: int
    end: int
    text: str


def check_sizes(size: int, overlap: int) -> None:
    """Raise InvalidInput unless 0 < size <= SIZE_MAX and 0 <= overlap < size."""
    if isinstance(size, bool) or not isinstance(size, int) or not 0 < size <= SIZE_MAX:
        raise InvalidInput(f"chunk size {size!r} must be an integer 1..{SIZE_MAX}")
    if isinstance(overlap, bool) or not isinstance(overlap, int) or not 0 <= overlap < size:
        raise InvalidInput(f"overlap {overlap!r} must be an integer 0..{size - 1} (below the size)")


def chunk_by_characters(text: str, *, size: int = 1200, overlap: int = 0) -> list[Chunk]:
    """Chunks of at most `size` characters made of whole sentences, ending at a paragraph end
    when one falls in the chunk's second half."""
    check_sizes(size, overlap)
    pieces = _pieces(text, size)
    chunks: list[Chunk] = []
    position = 0  # index into pieces
    while position < len(pieces):
        start = pieces[position][0]
        following = position + 1
        while following < len(pieces) and pieces[following][1] - start <= size:
            following += 1
        if following < len(pieces):  # more text follows: prefer a paragraph end as the cut
            ends = [j + 1 for j in range(position, following) if pieces[j][2]]
            good = [j for j in ends if pieces[j - 1][1] - start >= size // 2]
            following = good[-1] if good else following
        end = pieces[following - 1][1]
        chunks.append(Chunk(len(chunks), start, end, text[start:end]))
        if following >= len(pieces):
            break
        # The next chunk starts at the earliest sentence of this one that ends the overlap
        # window (always past this chunk's first sentence, so chunking advances).
        position = next(
            (j for j in range(position + 1, following) if end - pieces[j][0] <= overlap),
            following,
        )
    return chunks


def chunk_by_tokens(text: str, tokenizer: Any, *, size: int = 256, overlap: int = 0) -> list[Chunk]:
    """Windows of at most `size` tokens, `overlap` tokens shared, mapped back to characters."""
    check_sizes(size, overlap)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets: Sequence[tuple[int, int]] = encoded["offset_mapping"]
    chunks: list[Chunk] = []
    step = size - overlap
    for first in range(0, max(len(offsets), 1), step):
        window = offsets[first : first + size]
        if not window:
            break
        start, end = window[0][0], window[-1][1]
        chunks.append(Chunk(len(chunks), start, end, text[start:end]))
        if first + size >= len(offsets):
            break
    return chunks


def _pieces(text: str, size: int) -> list[tuple[int, int, bool]]:
    """(start, end, ends a paragraph) of every sentence, cut at words where one is longer than
    `size`; the whitespace between pieces belongs to none."""
    pieces: list[tuple[int, int, bool]] = []
    for paragraph in _split(text, _PARAGRAPH, 0, len(text)):
        parts = [
            part
            for sentence in _split(text, _SENTENCE_END, *paragraph)
            for part in _cut(text, sentence, size)
        ]
        pieces.extend(
            (start, end, index == len(parts) - 1) for index, (start, end) in enumerate(parts)
        )
    return pieces


def _split(text: str, pattern: re.Pattern[str], start: int, end: int) -> list[tuple[int, int]]:
    spans = []
    cursor = start
    for match in pattern.finditer(text, start, end):
        spans.append((cursor, match.start()))
        cursor = match.end()
    spans.append((cursor, end))
    return [_strip(text, s, e) for s, e in spans if text[s:e].strip()]


def _strip(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _cut(text: str, span: tuple[int, int], size: int) -> list[tuple[int, int]]:
    start, end = span
    parts = []
    while end - start > size:
        limit = start + size
        cut = text.rfind(" ", start + 1, limit)
        cut = limit if cut <= start else cut
        parts.append(_strip(text, start, cut))
        start = cut
        while start < end and text[start].isspace():
            start += 1
    if start < end:
        parts.append((start, end))
    return parts
