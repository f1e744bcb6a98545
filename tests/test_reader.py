"""The grounded reader adapter (issue 24): its examples are what `viz ask` sends, with the
evidence's number as the citation or "I can't find" when the evidence is hidden; only the
answer is trained on; a short run writes a PEFT adapter with a manifest naming its base, and
merging it leaves the cached base untouched."""

from __future__ import annotations

import re

import pytest
import torch

from viz.datasets.qasper import load_questions
from viz.rag.answer import CANNOT_FIND, SYSTEM
from viz.training.reader import ReaderConfig, reader_examples, tokenize, train_reader, with_reader
from worlds.catalogue import qasper_subset


@pytest.fixture(scope="module")
def data(tmp_path_factory):  # type: ignore[no-untyped-def]
    return qasper_subset(tmp_path_factory.mktemp("qasper"), "qasper-train", 6)


def test_examples_cite_the_source_holding_the_evidence_or_say_they_cannot_find(data) -> None:
    examples = reader_examples(data, seed=0, hide_share=0.3)
    questions = {q.question_id: q for q in load_questions(data)}
    grounded = [e for e in examples if e.grounded]
    hidden = [e for e in examples if not e.grounded]
    assert grounded and hidden
    for example in examples:
        system, user = example.messages
        assert system == {"role": "system", "content": SYSTEM}
        assert user["content"].startswith("Sources:\n\n[1] ")
        evidence = [e.strip()[:150] for e in questions[example.question_id].evidence]
        sources = re.split(r"\n\n(?=\[\d+\] )", user["content"].split("\n\nQuestion: ")[0])
        holding = {i for i, s in enumerate(sources, 0) if any(e and e in s for e in evidence)}
        if example.grounded:
            number = int(re.search(r"\[(\d+)\]$", example.answer).group(1))  # type: ignore[union-attr]
            assert number in holding, "the citation names the source holding the evidence"
        else:
            assert example.answer == CANNOT_FIND
            assert not holding, "no source holds the evidence of a 'can't find' example"


def test_only_the_answer_and_the_end_of_turn_are_trained_on(data, tokenizer) -> None:
    example = reader_examples(data, seed=0)[0]
    ids, labels = tokenize(tokenizer, example, prompt_tokens_max=2048)
    answer = [t for t in labels if t != -100]
    assert len(ids) == len(labels) and answer == ids[-len(answer) :]
    assert answer[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(answer[:-1]) == example.answer


def test_a_short_run_writes_an_adapter_that_merges_without_touching_the_base(
    data, smollm2, smollm2_folder, smollm2_record, tmp_path
) -> None:
    examples = reader_examples(data, seed=0, limit=4)
    out = tmp_path / "reader"
    config = ReaderConfig(steps=2, batch_size=1, rank=4, alpha=8, prompt_tokens_max=128)
    manifest = train_reader(
        smollm2_folder,
        examples,
        out,
        config,
        base={"id": smollm2_record.id, "weights_sha256": smollm2_record.weights_sha256},
        provenance={"dataset": "qasper-train subset", "licence": "CC-BY-4.0"},
    )
    assert (out / "adapter_model.safetensors").is_file() and (out / "viz-manifest.json").is_file()
    assert manifest["base"]["id"] == smollm2_record.id and manifest["kind"] == "reader"
    assert manifest["metrics"]["train_loss_first"] > 0
    name = "model.layers.0.self_attn.q_proj.weight"
    before = dict(smollm2.model.named_parameters())[name].detach().clone()
    merged = with_reader(smollm2, out)
    assert torch.equal(dict(smollm2.model.named_parameters())[name], before)  # the base is kept
    assert not torch.equal(dict(merged.model.named_parameters())[name], before)
    with pytest.raises(Exception, match="exists"):
        train_reader(smollm2_folder, examples, out, config, base={}, provenance={})


def test_the_shipped_reader_is_a_servable_lora_for_the_default_base(smollm2, tmp_path) -> None:
    import json

    from viz.errors import NotFound
    from viz.models.registry import BUILTIN_BASES
    from viz.serving.engines.lora import load_lora
    from viz.training.reader import shipped_reader

    folder = shipped_reader()
    manifest = json.loads((folder / "viz-manifest.json").read_text())
    base = next(iter(BUILTIN_BASES.values()))
    assert manifest["kind"] == "reader" and manifest["base"]["id"] == base.id
    assert manifest["base"]["weights_sha256"] == base.weights_sha256  # trained on these weights
    assert manifest["data"]["licence"] == "CC-BY-4.0"
    config = (folder / "adapter_config.json").read_text()
    loaded = load_lora(folder / "adapter_model.safetensors", config, version_id=1, label="reader")
    assert loaded.rank == 16 and len(loaded.modules) == 7 * 30  # every linear layer, 30 layers
    assert all(a.dtype == torch.float32 for a, _ in loaded.modules.values())  # served upcast
    merged = with_reader(smollm2, folder)  # and it merges for `viz ask`
    name = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(
        dict(merged.model.named_parameters())[name], dict(smollm2.model.named_parameters())[name]
    )
    with pytest.raises(NotFound, match="viz adapters train-reader"):
        shipped_reader("no-such-base")
