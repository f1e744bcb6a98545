"""What an adapter says about itself: `viz-manifest.json` and an HF-style `README.md` card.

The manifest is honest about the data: every training and held-out document with its sha256,
licence and token count, next to the base it was trained on (id, weights sha256 and the precision
used: an adapter trained on an NF4 base should be served on the same NF4 base, see PEFT issue
1043), the LoRA config, hyper-parameters, hardware, duration, library versions and metrics.
"""

from __future__ import annotations

import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from viz.store.schema import BaseModel
from viz.training.config import TrainingConfig
from viz.training.dataset import TrainingSet

__all__ = ["MANIFEST_FILE", "build_manifest", "hardware", "model_card"]

MANIFEST_FILE = "viz-manifest.json"
MANIFEST_FORMAT = 1
LIBRARIES = ("viz", "torch", "transformers", "peft", "bitsandbytes", "safetensors")


def build_manifest(
    *,
    name: str,
    account: str,
    base: BaseModel,
    config: TrainingConfig,
    training_set: TrainingSet,
    lora_config: dict[str, Any],
    metrics: dict[str, Any],
    run: dict[str, Any],
    start: dict[str, Any] | None = None,
) -> dict[str, Any]:
    def documents(split: str, items: Any) -> list[dict[str, Any]]:
        return [
            {
                "id": d.document_id,
                "sha256": d.sha256,
                "licence": d.licence,
                "title": d.title,
                "tokens": d.tokens,
                "windows": len(d.windows),
                "split": split,
            }
            for d in items
        ]

    manifest = {
        "format": MANIFEST_FORMAT,
        "name": name,
        "creator": account,
        "base": {
            "id": base.id,
            "weights_sha256": base.weights_sha256,
            "licence": base.licence,
            "provenance": base.provenance_class,
            "precision": config.precision,
        },
        "method": config.method,
        "lora": lora_config,
        "hyperparameters": config.as_dict(),
        "documents": documents("train", training_set.train)
        + documents("held_out", training_set.held_out),
        "licences": sorted({d.licence for d in (*training_set.train, *training_set.held_out)}),
        "metrics": metrics,
        "run": {**run, "hardware": hardware(), "libraries": library_versions()},
    }
    if start:
        manifest["start"] = start
    return manifest


def model_card(manifest: dict[str, Any]) -> str:
    """A Hugging Face style README with YAML front matter (license, base_model, tags)."""
    m = manifest["metrics"]
    licences = manifest["licences"]
    licence = licences[0].lower() if len(licences) == 1 else "other"
    documents = "\n".join(
        f"| {d['id']} | {d['title'][:60]} | {d['licence']} | {d['tokens']} | {d['split']} |"
        for d in manifest["documents"]
    )
    return f"""---
license: {licence}
base_model: {manifest["base"]["id"]}
library_name: peft
tags:
- viz
- lora
- {manifest["method"]}
---

# {manifest["name"]}

A {manifest["method"].upper()} adapter for `{manifest["base"]["id"]}` (trained on its
{manifest["base"]["precision"]} weights; serve it on the same precision), made with Viz by
`{manifest["creator"]}`.

| perplexity | base | adapter |
| --- | --- | --- |
| held-out docs | {m["held_out_perplexity_base"]:.2f} | {m["held_out_perplexity_adapter"]:.2f} |
| general sample | {m["general_perplexity_base"]:.2f} | {m["general_perplexity_adapter"]:.2f} |

## Training documents

| id | title | licence | tokens | split |
| --- | --- | --- | --- | --- |
{documents}

Licences of the training data: {", ".join(licences)}. Full provenance in `viz-manifest.json`.
"""


def hardware() -> dict[str, Any]:
    # deferred: torch is heavy
    import torch

    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu": cpu,
        "cpu_threads": torch.get_num_threads(),
        "gpu": gpu,
        "platform": platform.platform(),
    }


def library_versions() -> dict[str, str]:
    versions = {}
    for library in LIBRARIES:
        try:
            versions[library] = metadata.version(library)
        except metadata.PackageNotFoundError:
            versions[library] = "absent"
    return versions
