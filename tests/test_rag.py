"""RAG, part 1: chunking (by characters at paragraph/sentence/word boundaries, and by tokens)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from viz.errors import InvalidInput
from viz.rag import chunk_by_characters, chunk_by_tokens
from worlds.catalogue import QASPER_PAPERS, SHARED

PAPER = (QASPER_PAPERS / "1503.00841.txt").read_text()


@pytest.mark.parametrize("size", [800, 1200, 1600])
def test_character_chunks_keep_their_offsets_and_the_size(size: int) -> None:
    chunks = chunk_by_characters(PAPER, size=size)
    assert chunks and all(PAPER[c.start : c.end] == c.text for c in chunks)
    assert all(len(c.text) <= size for c in chunks)
    assert [c.index for c in chunks] == list(range(len(chunks)))
    covered = "".join(PAPER[c.start : c.end] for c in chunks)
    assert "".join(covered.split()) == "".join(PAPER.split()), "no text lost or repeated"


def test_chunks_end_at_paragraph_or_sentence_boundaries() -> None:
    for chunk in chunk_by_characters(PAPER, size=1200):
        after = PAPER[chunk.end : chunk.end + 2]
        assert chunk.end == len(PAPER) or after.startswith(("\n", " ")), after
        assert chunk.text.rstrip()[-1] in ".!?)\"]'" or "\n" in after or len(chunk.text) > 1000


def test_overlap_repeats_whole_sentences_and_always_advances() -> None:
    plain = chunk_by_characters(PAPER, size=800)
    overlapping = chunk_by_characters(PAPER, size=800, overlap=200)
    assert len(overlapping) > len(plain)
    for first, second in zip(overlapping, overlapping[1:], strict=False):
        assert first.start < second.start
        assert first.end - second.start <= 200


def test_gold_evidence_paragraphs_land_inside_chunks() -> None:
    questions = json.loads((SHARED / "data" / "qasper-dev" / "questions.json").read_text())
    evidence = [
        e
        for q in questions
        if q["paper_id"] == "1503.00841"
        for a in q["answers"]
        for e in a["evidence"]
        if len(e) < 1000 and e in PAPER
    ]
    assert evidence
    chunks = chunk_by_characters(PAPER, size=1200)
    for paragraph in evidence:
        assert any(paragraph in c.text for c in chunks), paragraph[:80]


def test_token_chunks_map_back_to_the_text(tokenizer) -> None:  # type: ignore[no-untyped-def]
    chunks = chunk_by_tokens(PAPER[:20_000], tokenizer, size=256, overlap=32)
    assert len(chunks) > 3
    for chunk in chunks:
        assert PAPER[chunk.start : chunk.end] == chunk.text
        assert len(tokenizer(chunk.text, add_special_tokens=False)["input_ids"]) <= 256 + 2


@given(
    text=st.text(alphabet=st.sampled_from("ab. \n"), max_size=400),
    size=st.integers(1, 60),
    overlap=st.integers(0, 59),
)
def test_any_text_is_chunked_within_the_size(text: str, size: int, overlap: int) -> None:
    overlap = min(overlap, size - 1)
    chunks = chunk_by_characters(text, size=size, overlap=overlap)
    assert all(0 < len(c.text) <= size and text[c.start : c.end] == c.text for c in chunks)
    assert bool(chunks) == bool(text.strip())


@pytest.mark.parametrize(("size", "overlap"), [(0, 0), (100, 100), (-5, 0), (10, -1), (True, 0)])
def test_bad_sizes_are_refused(size: int, overlap: int) -> None:
    with pytest.raises(InvalidInput):
        chunk_by_characters(PAPER, size=size, overlap=overlap)


def test_the_shipped_embedder_puts_paraphrases_close_and_strangers_far(embedder) -> None:
    vectors = embedder.encode(
        [
            "What is the capital of France?",
            "Paris is the capital of France.",
            "Bananas are a yellow fruit.",
        ]
    )
    assert tuple(vectors.shape) == (3, 384)
    norms = vectors.norm(dim=1)
    assert all(abs(float(n) - 1) < 1e-5 for n in norms)
    similarity = vectors @ vectors.T
    assert float(similarity[0, 1]) > 0.7 > 0.2 > float(similarity[0, 2])


def test_embeddings_do_not_depend_on_the_batch(embedder) -> None:
    texts = [f"Sentence number {i} about retrieval." for i in range(7)] + ["a much longer " * 30]
    together = embedder.encode(texts, batch_size=8)
    alone = embedder.encode(texts, batch_size=1)
    # Padding must not leak into the mean (bf16 on CPUs that have it: equal to ~3 decimals).
    assert float((together * alone).sum(dim=-1).min()) > 0.999
    assert float((together - alone).abs().max()) < 0.02


def test_an_embedder_folder_without_safetensors_is_refused(tmp_path) -> None:
    from viz.rag import load_embedder

    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"not unpickled")
    with pytest.raises(InvalidInput, match="safetensors"):
        load_embedder(tmp_path)
