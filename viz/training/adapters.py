"""Trained adapters on disk: find them, read their manifests, load them on their base.

An adapter folder is plain PEFT (`adapter_config.json` + `adapter_model.safetensors`) plus
`viz-manifest.json` and `README.md`. Only safetensors are loaded: a folder holding pickled
weights (`adapter_model.bin`) is refused before PEFT could unpickle it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from viz.errors import InvalidInput, NotFound
from viz.models._safetensors import PICKLE_SUFFIXES
from viz.training.config import check_adapter_name
from viz.training.manifest import MANIFEST_FILE

__all__ = ["adapter_folder", "list_adapters", "load_adapter", "read_manifest"]


def adapter_folder(adapters_dir: Path, name: str) -> Path:
    check_adapter_name(name)
    folder = adapters_dir / name
    if not (folder / MANIFEST_FILE).is_file():
        known = ", ".join(p.name for p in list_adapters(adapters_dir)) or "none"
        raise NotFound(
            f"no adapter named {name!r} in {adapters_dir} (known: {known}); train "
            "one with: viz adapters train --name NAME ..."
        )
    return folder


def list_adapters(adapters_dir: Path) -> list[Path]:
    if not adapters_dir.is_dir():
        return []
    return sorted(p for p in adapters_dir.iterdir() if (p / MANIFEST_FILE).is_file())


def read_manifest(folder: Path) -> dict[str, Any]:
    try:
        manifest: dict[str, Any] = json.loads((folder / MANIFEST_FILE).read_text())
    except (OSError, ValueError) as error:
        raise InvalidInput(f"{folder / MANIFEST_FILE} cannot be read: {error}") from error
    return manifest


def load_adapter(folder: Path, base_model: Any) -> Any:
    """`base_model` wrapped with the adapter in `folder` (safetensors only), in eval mode."""
    # deferred: peft is heavy
    from peft import PeftModel

    pickled = [p.name for p in folder.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES]
    if pickled or not (folder / "adapter_model.safetensors").is_file():
        raise InvalidInput(
            f"{folder} must hold adapter_model.safetensors and no pickled weights (found "
            f"{', '.join(pickled) or 'no safetensors'}); re-save it with "
            "save_pretrained(safe_serialization=True)"
        )
    model = PeftModel.from_pretrained(base_model, folder)
    model.eval()
    return model
