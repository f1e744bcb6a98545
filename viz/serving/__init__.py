"""Serving: the multi-adapter inference engine and the OpenAI-compatible HTTP API."""

from viz.serving.adapter_ref import ModelRef, Term, parse_model
from viz.serving.adapter_slots import AdapterSlots
from viz.serving.engine import Engine, Job
from viz.serving.loaded_adapter import LoadedAdapter, load_lora
from viz.serving.multi_lora import LoraBatch, install_hooks

__all__ = [
    "AdapterSlots",
    "Engine",
    "Job",
    "LoadedAdapter",
    "LoraBatch",
    "ModelRef",
    "Term",
    "install_hooks",
    "load_lora",
    "parse_model",
]
