"""A weighted composition as one rank-stacked LoRA: exactly the weighted sum, as plain PEFT
computes it with every adapter active and each scaling multiplied by its weight."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from viz.errors import InvalidInput
from viz.serving.engines.lora import load_lora
from viz.serving.engines.stacking import COMPOSITION_FILE, composition_key, write_stacked
from worlds.catalogue import make_tiny_adapter
from worlds.serving import peft_composition


def peft_adapter(base_folder: Path, folder: Path, *, seed: int, rank: int, **options) -> Path:  # type: ignore[no-untyped-def]
    """A PEFT LoRA with non-zero A and B and the given config options."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(base_folder),
        LoraConfig(r=rank, init_lora_weights=False, **options),
    )
    model.save_pretrained(folder)
    return folder


def loaded(folder: Path, version_id: int):  # type: ignore[no-untyped-def]
    config = (folder / "adapter_config.json").read_text()
    return load_lora(
        folder / "adapter_model.safetensors", config, version_id=version_id, label=folder.name
    )


def peft_logits(base_folder: Path, folders_weights, ids):  # type: ignore[no-untyped-def]
    """Logits of plain PEFT with these adapters all active, each scaling times its weight."""
    from transformers import AutoModelForCausalLM

    model = peft_composition(AutoModelForCausalLM.from_pretrained(base_folder), folders_weights)
    with torch.no_grad():
        return model(ids).logits


@pytest.fixture
def adapters(tiny_model_folder, tmp_path):  # type: ignore[no-untyped-def]
    """Three adapters unlike each other: q/v only, every linear layer with rsLoRA, MLP only."""
    return {
        "qv": make_tiny_adapter(tiny_model_folder, tmp_path / "qv", seed=1, rank=4),
        "all": peft_adapter(
            tiny_model_folder,
            tmp_path / "all",
            seed=2,
            rank=8,
            lora_alpha=4,
            use_rslora=True,
            target_modules="all-linear",
        ),
        "mlp": peft_adapter(
            tiny_model_folder,
            tmp_path / "mlp",
            seed=3,
            rank=2,
            lora_alpha=16,
            target_modules=["gate_proj", "down_proj"],
        ),
    }


def test_a_stacked_composition_is_exactly_the_weighted_sum(
    adapters, tiny_model_folder, tmp_path
) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    weights = {"qv": 0.7, "all": 0.5, "mlp": 1.3}
    parts = [(loaded(adapters[name], n), w) for n, (name, w) in enumerate(weights.items())]
    folder = write_stacked(tmp_path / "stacked", parts, base_id="tiny")
    config = json.loads((folder / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"], config["use_rslora"]) == (14, 14, False)

    ids = torch.tensor([[1, 17, 230, 5, 99, 1000, 42, 7]])
    expected = peft_logits(
        tiny_model_folder, [(adapters[name], w) for name, w in weights.items()], ids
    )
    stacked = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_model_folder), folder
    ).eval()
    with torch.no_grad():
        got = stacked(ids).logits
        base = AutoModelForCausalLM.from_pretrained(tiny_model_folder)(ids).logits
    assert (expected - base).abs().max() > 1e-2, "the composition changes the output"
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_a_composition_is_named_by_its_parts_and_written_once(adapters, tmp_path) -> None:
    qv, mlp = loaded(adapters["qv"], 1), loaded(adapters["mlp"], 2)
    key = composition_key([(1, 0.7), (2, 0.5)])
    assert key == composition_key([(2, 0.5), (1, 0.7)]), "the order of the sum is irrelevant"
    assert key != composition_key([(1, 0.5), (2, 0.7)])
    first = write_stacked(tmp_path, [(qv, 0.7), (mlp, 0.5)], base_id="tiny")
    assert first.name == key
    stamp = (first / "adapter_model.safetensors").stat().st_mtime_ns
    again = write_stacked(tmp_path, [(mlp, 0.5), (qv, 0.7)], base_id="tiny")
    assert again == first and (again / "adapter_model.safetensors").stat().st_mtime_ns == stamp
    made_of = json.loads((first / COMPOSITION_FILE).read_text())
    assert [(part["adapter"], part["weight"]) for part in made_of] == [("qv", 0.7), ("mlp", 0.5)]
    assert not list(tmp_path.glob(".*.partial"))


def test_adapters_of_different_bases_are_refused(adapters, tmp_path) -> None:
    qv = loaded(adapters["qv"], 1)
    other = loaded(adapters["qv"], 2)
    module = next(iter(other.modules))
    a, b = other.modules[module]
    other.modules[module] = (torch.zeros(a.shape[0], a.shape[1] + 1), b)
    with pytest.raises(InvalidInput, match="not the same base"):
        write_stacked(tmp_path, [(qv, 1.0), (other, 1.0)], base_id="tiny")
    with pytest.raises(InvalidInput, match="at least one"):
        write_stacked(tmp_path, [], base_id="tiny")
