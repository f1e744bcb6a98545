"""An adapter version in memory: its LoRA A and B matrices per base module, ready to gather.

Loaded from the content-addressed blob of its safetensors weights (memory-mapped, never
unpickled) and the PEFT config stored with the version. `scaling` is alpha / r (alpha / sqrt(r)
for rsLoRA); the delta is (x @ A^T @ B^T) x scaling, in that order, as PEFT computes it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from viz.errors import InvalidInput, StorageCorrupt

__all__ = ["LoadedAdapter", "load_lora"]

_PREFIX = "base_model.model."
UNSUPPORTED = (
    "use_dora",
    "rank_pattern",
    "alpha_pattern",
    "modules_to_save",
    "fan_in_fan_out",
    "layers_to_transform",
)


@dataclass
class LoadedAdapter:
    """One adapter version's LoRA weights, keyed by the base module name they adapt."""

    version_id: int
    label: str  # name@version
    rank: int
    scaling: float
    modules: dict[str, tuple[Any, Any]]  # module name -> (A [r, in], B [out, r])
    size_bytes: int


def load_lora(path: Path, config_json: str, *, version_id: int, label: str) -> LoadedAdapter:
    """Read a PEFT LoRA safetensors file and its config into a `LoadedAdapter` (float32).

    Raises:
        StorageCorrupt: the file cannot be read as safetensors.
        InvalidInput: the config is not a LoRA config, or A/B pairs are incomplete.
    """
    from safetensors import safe_open  # deferred: loads torch tensors

    try:
        config = json.loads(config_json)
        rank = int(config["r"])
        alpha = float(config.get("lora_alpha", rank))
    except (ValueError, KeyError, TypeError) as error:
        raise InvalidInput(f"{label}: its adapter config cannot be read ({error})") from error
    if str(config.get("peft_type", "LORA")).upper() != "LORA":
        raise InvalidInput(f"{label} is a {config.get('peft_type')} adapter; Viz serves LoRA")
    unsupported = [key for key in UNSUPPORTED if config.get(key)]
    if unsupported:
        raise InvalidInput(
            f"{label} uses {', '.join(unsupported)}, which Viz's multi-adapter engine does not "
            "serve yet; publish a plain LoRA (one r and lora_alpha, linear layers only)"
        )
    scaling = alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank
    pairs: dict[str, dict[str, Any]] = {}
    try:
        with safe_open(str(path), framework="pt") as weights:
            for key in weights.keys():  # noqa: SIM118 - safe_open is not a mapping
                name = key.removeprefix(_PREFIX)
                for part, side in ((".lora_A.weight", "A"), (".lora_B.weight", "B")):
                    if name.endswith(part):
                        module = name[: -len(part)]
                        pairs.setdefault(module, {})[side] = weights.get_tensor(key).float()
                        break
                else:
                    raise InvalidInput(
                        f"{label} holds {key}, which is not a LoRA A/B matrix of a linear "
                        "layer (embeddings, saved modules and DoRA are not served yet)"
                    )
    except InvalidInput:
        raise
    except Exception as error:  # noqa: BLE001 - SafetensorError is a bare Exception
        raise StorageCorrupt(f"weights of {label} at {path} cannot be read: {error}") from error
    modules = {}
    size = 0
    for module, pair in pairs.items():
        if set(pair) != {"A", "B"}:
            raise InvalidInput(f"{label}: module {module} has lora_{''.join(pair)} only")
        a, b = pair["A"], pair["B"]
        modules[module] = (a.contiguous(), b.contiguous())
        size += (a.numel() + b.numel()) * 4
    if not modules:
        raise InvalidInput(f"{label} holds no LoRA weights")
    return LoadedAdapter(version_id, label, rank, scaling, modules, size)
