"""Adapters from documents: LoRA / QLoRA training with provenance manifests and evaluation.

`train_from_documents` (and `update_from_documents` for a new version) is the one recipe from
catalogued documents to a trained adapter folder; the other names are its steps.
"""

from viz.training.config import METHODS, TrainingConfig, check_adapter_name
from viz.training.dataset import (
    TrainingSet,
    build_training_set,
    model_context_length,
    select_documents,
    windows,
)
from viz.training.evaluate import general_windows, perplexity
from viz.training.manifest import MANIFEST_FILE, build_manifest, model_card
from viz.training.recipe import train_from_documents, update_from_documents
from viz.training.trainer import TrainingResult, batch_indexes, train_adapter

__all__ = [
    "MANIFEST_FILE",
    "METHODS",
    "TrainingConfig",
    "TrainingResult",
    "TrainingSet",
    "batch_indexes",
    "build_manifest",
    "build_training_set",
    "check_adapter_name",
    "general_windows",
    "model_card",
    "model_context_length",
    "perplexity",
    "select_documents",
    "train_adapter",
    "train_from_documents",
    "update_from_documents",
    "windows",
]
