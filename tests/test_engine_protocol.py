"""The Engine protocol: the builtin engine implements it, and the gateway never imports torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from viz.config import Settings
from viz.errors import InvalidInput
from viz.models.generate import GenerationSettings
from viz.serving.engines import (
    AdapterWeights,
    Engine,
    EngineLimits,
    Generation,
    open_adapter_cache,
    open_engine,
)
from viz.store import open_database, session_scope
from worlds.catalogue import add_tiny_base
from worlds.serving import make_adapter

GATEWAY = [
    "viz.app",
    "viz.serving",
    "viz.serving.protocol",
    "viz.serving.call",
    "viz.serving.idempotency",
    "viz.serving.responses",
    "viz.serving.routes",
    "viz.serving.server",
    "viz.serving.engines",
]


def test_the_gateway_does_not_import_torch() -> None:
    code = (
        "import importlib, json, sys\n"
        f"for name in {GATEWAY!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps([m for m in ('torch', 'transformers', 'peft') if m in sys.modules]))\n"
    )
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=root, check=True
    )
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def test_the_builtin_engine_generates_through_the_protocol(tiny_model_folder, tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = Settings(home=tmp_path)
    database = open_database(settings.database_url_resolved)
    with session_scope(database) as session:
        record = add_tiny_base(session, tiny_model_folder)
        session.flush()
        session.expunge(record)
    database.dispose()
    with pytest.raises(InvalidInput, match="engine"):
        open_engine(
            "nope",
            record,
            settings.models_dir,
            precision="fp32",
            batch_max=2,
            queue_max=4,
            adapter_cache=None,
        )
    cache = open_adapter_cache("builtin", 2**30)
    engine = open_engine(
        "builtin",
        record,
        settings.models_dir,
        precision="fp32",
        batch_max=2,
        queue_max=4,
        adapter_cache=cache,
    )
    try:
        assert isinstance(engine, Engine)
        assert engine.limits == EngineLimits(None, ("fp32", "bf16", "nf4"), 2, 4)
        folder = make_adapter(tiny_model_folder, tmp_path / "adapter", seed=1, rank=4)
        use = AdapterWeights(
            version_id=1,
            label="tiny-lora@1.0.0",
            weights_path=folder / "adapter_model.safetensors",
            config_json=(folder / "adapter_config.json").read_text(),
            weight=0.5,
        )
        composition = engine.compose([use])
        assert cache.resident() == ["tiny-lora@1.0.0"]
        prompt_ids = engine.tokenizer("Hello there")["input_ids"]
        settings_ = GenerationSettings(max_tokens=5, temperature=0)
        generation = engine.submit(prompt_ids, settings_, composition)
        assert isinstance(generation, Generation)
        text = "".join(generation.pieces())
        assert isinstance(text, str)
        assert generation.finish_reason in ("stop", "length")
        assert 1 <= generation.completion_tokens <= 5
        assert generation.finished_at is not None
        assert generation.finished_at >= generation.submitted_at
        long = engine.submit(prompt_ids, GenerationSettings(max_tokens=200), [])
        long.cancel()
        "".join(long.pieces())
        assert long.finish_reason in ("cancelled", "stop")
        assert long.completion_tokens < 200
    finally:
        engine.close(drain_s=5)
