"""Base-model registry and loading: builtin, local folders, hashes, precision variants."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from viz.errors import Conflict, InvalidInput, NotFound, StorageCorrupt
from viz.models import (
    add_base_model,
    estimate_memory,
    get_base_model,
    list_base_models,
    load_model,
    measured_bytes,
    parameter_split,
)
from viz.models.loading import CACHE_MANIFEST, ensure_cached, load_folder
from viz.store import session_scope

# SmolLM2-135M: 30 layers x (2*576*576 + 2*576*192 + 3*576*1536) linear weights; the rest is
# the 49152 x 576 tied embedding plus norms (from the model's config.json).
SMOLLM2_LINEAR_PARAMETERS = 106_168_320
SMOLLM2_OTHER_PARAMETERS = 28_346_688


def test_the_builtin_model_is_registered_with_its_licence_and_provenance(sqlite_engine) -> None:
    with session_scope(sqlite_engine) as session:
        models = {model.id: model for model in list_base_models(session)}

    builtin = models["smollm2-135m-instruct"]
    assert builtin.licence == "Apache-2.0"
    assert builtin.provenance_class == "web-crawl"
    assert "FineWeb-Edu" in builtin.provenance_sources
    assert builtin.source_kind == "pypi"


def test_an_unknown_model_id_lists_the_known_ones(sqlite_engine) -> None:
    with session_scope(sqlite_engine) as session, pytest.raises(NotFound) as raised:
        get_base_model(session, "gpt-5")

    assert "smollm2-135m-instruct" in raised.value.message


def test_a_local_folder_registers_with_its_weights_hash_and_loads(
    sqlite_engine, tiny_model_folder, tmp_path
) -> None:
    with session_scope(sqlite_engine) as session:
        record = add_base_model(
            session,
            str(tiny_model_folder),
            model_id="tiny-llama",
            licence="mit",
            provenance_class="unknown",
            provenance_sources="random init",
        )
    assert record.licence == "MIT"
    assert record.architecture == "LlamaForCausalLM"
    assert len(record.weights_sha256) == 64

    loaded = load_model(record, tmp_path / "models", precision="bf16")

    assert loaded.model.dtype == torch.bfloat16
    assert record.parameter_count == sum(p.numel() for p in loaded.model.parameters())


def test_registering_twice_or_with_bad_fields_is_refused(sqlite_engine, tiny_model_folder) -> None:
    with session_scope(sqlite_engine) as session:
        add_base_model(
            session,
            str(tiny_model_folder),
            model_id="tiny",
            licence="MIT",
            provenance_class="unknown",
        )
        with pytest.raises(Conflict):
            add_base_model(
                session,
                str(tiny_model_folder),
                model_id="tiny",
                licence="MIT",
                provenance_class="unknown",
            )
        with pytest.raises(InvalidInput) as raised:
            add_base_model(
                session,
                str(tiny_model_folder),
                model_id="Tiny Model",
                licence="MIT-9",
                provenance_class="some",
            )
    message = raised.value.message
    assert "model id" in message and "provenance" in message and "MIT" in message


def test_a_folder_with_only_pickled_weights_is_refused(sqlite_engine, tmp_path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    (tmp_path / "pytorch_model.bin").write_bytes(b"not unpickled, ever")

    with session_scope(sqlite_engine) as session, pytest.raises(InvalidInput, match="safetensors"):
        add_base_model(
            session, str(tmp_path), model_id="pickled", licence="MIT", provenance_class="unknown"
        )


def test_changed_weights_are_refused_by_hash(sqlite_engine, tiny_model_folder, tmp_path) -> None:
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_folder, folder)
    with session_scope(sqlite_engine) as session:
        record = add_base_model(
            session, str(folder), model_id="tiny", licence="MIT", provenance_class="unknown"
        )
    ensure_cached(record, tmp_path / "models")
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))

    with pytest.raises(StorageCorrupt, match="model.safetensors"):
        ensure_cached(record, tmp_path / "models")


def test_missing_weights_name_the_fix(sqlite_engine, tiny_model_folder, tmp_path) -> None:
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_folder, folder)
    with session_scope(sqlite_engine) as session:
        record = add_base_model(
            session, str(folder), model_id="tiny", licence="MIT", provenance_class="unknown"
        )
    shutil.rmtree(folder)

    with pytest.raises(NotFound, match="missing"):
        ensure_cached(record, tmp_path / "models")


def test_a_hub_id_is_recorded_but_loading_explains_offline(sqlite_engine, tmp_path) -> None:
    with session_scope(sqlite_engine) as session:
        record = add_base_model(
            session,
            "HuggingFaceTB/SmolLM2-360M-Instruct",
            model_id="smollm2-360m",
            licence="Apache-2.0",
            provenance_class="web-crawl",
        )

    with pytest.raises(InvalidInput, match="offline"):
        load_model(record, tmp_path)


def test_memory_estimate_matches_measurement_per_precision(tiny_model_folder) -> None:
    from transformers import AutoConfig

    estimates = estimate_memory(*parameter_split(AutoConfig.from_pretrained(tiny_model_folder)))
    for precision in ("fp32", "bf16", "nf4"):
        measured = measured_bytes(load_folder(tiny_model_folder, precision))
        assert measured == pytest.approx(estimates[precision], rel=0.02), precision
    assert estimates["nf4"] < estimates["bf16"] < estimates["fp32"]


@pytest.mark.model
def test_the_gguf_converts_once_to_a_verified_cache(smollm2_folder, smollm2_record) -> None:
    manifest = json.loads((smollm2_folder / CACHE_MANIFEST).read_text())

    assert manifest["source_sha256"] == smollm2_record.weights_sha256
    assert "model.safetensors" in manifest["files"]
    assert not json.loads((smollm2_folder / "config.json").read_text()).get("quantization_config")
    assert ensure_cached(smollm2_record, smollm2_folder.parent, verify=True) == smollm2_folder


@pytest.mark.model
def test_the_default_model_parameter_split(smollm2_folder: Path) -> None:
    from transformers import AutoConfig

    split = parameter_split(AutoConfig.from_pretrained(smollm2_folder))

    assert split == (SMOLLM2_LINEAR_PARAMETERS, SMOLLM2_OTHER_PARAMETERS)


def test_a_replaced_gguf_is_refused_before_conversion(tmp_path, smollm2_record) -> None:
    from viz.store.schema import BaseModel

    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"GGUF" + bytes(100))
    record = BaseModel(
        id="swapped",
        source_kind="gguf",
        source_ref=str(fake),
        weights_sha256=smollm2_record.weights_sha256,
    )

    with pytest.raises(StorageCorrupt, match="corrupt or was replaced"):
        ensure_cached(record, tmp_path / "models")
