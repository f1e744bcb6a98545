"""Base models: the registry, loading in fp32 / bf16 / nf4, memory figures and generation."""

from viz.models.generate import GenerationSettings, TokenStream, chat_prompt_ids, generate_text
from viz.models.loading import PRECISIONS, LoadedModel, ensure_cached, load_model
from viz.models.memory import VariantMemory, estimate_memory, measured_bytes, parameter_split
from viz.models.registry import (
    BUILTIN_BASES,
    PROVENANCE_CLASSES,
    add_base_model,
    ensure_builtin_models,
    get_base_model,
    list_base_models,
)

__all__ = [
    "BUILTIN_BASES",
    "PRECISIONS",
    "PROVENANCE_CLASSES",
    "GenerationSettings",
    "LoadedModel",
    "TokenStream",
    "VariantMemory",
    "add_base_model",
    "chat_prompt_ids",
    "ensure_builtin_models",
    "ensure_cached",
    "estimate_memory",
    "generate_text",
    "get_base_model",
    "list_base_models",
    "load_model",
    "measured_bytes",
    "parameter_split",
]
