"""Pretraining a base from scratch (issue 23): a tokenizer trained on the corpus, a tiny Llama
trained on it that learns (held-out perplexity falls), a resumed run that ends where an
uninterrupted one does, and the corpus limits."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file

from viz.errors import InvalidInput
from viz.training.pretrain import PretrainConfig, pretrain, train_tokenizer
from worlds.catalogue import QASPER_PAPERS

PAPERS = [path.read_text() for path in sorted(QASPER_PAPERS.glob("*.txt"))[:4]]
TINY = PretrainConfig(size="tiny", tokens=40 * 8 * 128, batch_size=8, checkpoint_every=20)


@pytest.fixture(scope="module")
def tokenizer():  # type: ignore[no-untyped-def]
    return train_tokenizer(PAPERS[:3], vocab_size=1024)


def test_the_tokenizer_is_trained_on_the_corpus_and_encodes_any_text(tokenizer) -> None:
    assert len(tokenizer) == 1024
    text = "Café, 北京 and emoji 🙂 survive a round trip"
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
    common = tokenizer("the model", add_special_tokens=False)["input_ids"]
    assert len(common) <= 3  # frequent words of the corpus are whole tokens
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert prompt == "<|im_start|>user\nhi<|im_end|>\n"


def test_a_tiny_base_learns_and_a_resumed_run_ends_where_an_uninterrupted_one_does(
    tokenizer, tmp_path
) -> None:
    whole = pretrain(PAPERS[:3], PAPERS[3:], tokenizer, TINY, tmp_path / "whole")
    assert whole.steps == 40 and len(whole.losses) == 40
    assert whole.held_out_perplexity < whole.initial_perplexity / 2  # it learned
    assert sum(whole.losses[-5:]) < sum(whole.losses[:5])
    assert (whole.model_folder / "model.safetensors").is_file()
    assert (whole.model_folder / "tokenizer.json").is_file()

    work = tmp_path / "resumed"
    pretrain(PAPERS[:3], PAPERS[3:], tokenizer, TINY, work)  # leaves its checkpoint at step 20
    assert [c.name for c in (work / "checkpoints").glob("step-*")] == ["step-0000020"]
    resumed = pretrain(PAPERS[:3], PAPERS[3:], tokenizer, TINY, work, resume=True)
    assert resumed.losses == whole.losses
    expected = load_file(whole.model_folder / "model.safetensors")
    got = load_file(resumed.model_folder / "model.safetensors")
    assert all(torch.equal(expected[name], got[name]) for name in expected)
    assert math.isclose(resumed.held_out_perplexity, whole.held_out_perplexity, rel_tol=1e-5)


def test_a_corpus_too_small_or_too_many_tokens_is_refused(tokenizer, tmp_path) -> None:
    with pytest.raises(InvalidInput, match="needs at least"):
        pretrain(["a short text"], PAPERS[3:], tokenizer, TINY, tmp_path / "small")
    with pytest.raises(InvalidInput, match="passes over the corpus"):
        pretrain(PAPERS[:1], PAPERS[3:], tokenizer, PretrainConfig(tokens=10**9), tmp_path / "x")
    with pytest.raises(InvalidInput, match="size 'huge'"):
        PretrainConfig(size="huge").steps()
