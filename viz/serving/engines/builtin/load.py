"""Starting a builtin engine: load the base with `viz.models.loading`, hook it, serve it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from viz.models.loading import load_model
from viz.serving.engines.builtin.adapter_slots import AdapterSlots
from viz.serving.engines.builtin.engine import BuiltinEngine

__all__ = ["open_builtin"]


def open_builtin(
    record: Any,
    models_dir: Path,
    *,
    precision: str,
    batch_max: int,
    queue_max: int,
    slots: AdapterSlots | None = None,
) -> BuiltinEngine:
    """A `BuiltinEngine` over base `record` loaded in `precision` (see `viz.models.loading`).

    Raises:
        InvalidInput: an unknown precision.
        NotFound, StorageCorrupt: the model's files are missing or damaged.
    """
    loaded = load_model(record, models_dir, precision=precision)
    return BuiltinEngine(
        loaded.model, loaded.tokenizer, batch_max=batch_max, queue_max=queue_max, slots=slots
    )
