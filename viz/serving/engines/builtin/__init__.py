"""The builtin engine: transformers models with multi-LoRA forward hooks, continuous batching.

Every adapter of a composition is applied per row through forward hooks on the base's linear
layers (`multi_lora`), never merged; adapters are hot-loaded from their safetensors blobs
(`viz.serving.engines.lora`) into a byte-bounded cache (`adapter_slots`). `calibrate` times this
engine for the recommender's speed model (`viz.routing.speed` reads the result).
"""

from viz.serving.engines.builtin.adapter_slots import AdapterSlots
from viz.serving.engines.builtin.engine import BuiltinEngine
from viz.serving.engines.builtin.job import Job, Mix
from viz.serving.engines.builtin.load import open_builtin
from viz.serving.engines.builtin.multi_lora import LoraBatch, install_hooks

__all__ = [
    "AdapterSlots",
    "BuiltinEngine",
    "Job",
    "LoraBatch",
    "Mix",
    "install_hooks",
    "open_builtin",
]
