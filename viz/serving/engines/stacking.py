"""A weighted composition of LoRA adapters as one exact adapter, for engines that take one.

    delta(x) = sum_i w_i s_i B_i A_i x        (s_i = alpha_i / r_i, or alpha_i / sqrt(r_i) rsLoRA)

is one LoRA of rank R = sum_i r_i: A stacked row-wise from w_i s_i A_i, B stacked column-wise
from B_i, with lora_alpha = R (scale 1) and rsLoRA off (inheriting `use_rslora` would multiply
the result by sqrt(R)). A module an adapter does not adapt is a zero block. PEFT's
`add_weighted_adapter(..., combination_type="cat")` builds the same thing; this does it from
the stored weights without loading a model, and names the result by what it is made of.

    folder = write_stacked(out_dir, [(qa, 0.7), (mt, 0.5)], base_id="smollm2-135m-instruct")
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from viz.errors import InvalidInput
from viz.serving.engines.lora import LoadedAdapter

__all__ = ["COMPOSITION_FILE", "composition_key", "stack", "write_stacked"]

_PREFIX = "base_model.model."
COMPOSITION_FILE = "viz-composition.json"  # what the stacked adapter is made of, for people


def composition_key(terms: Sequence[tuple[int, float]]) -> str:
    """A short stable name for a composition of (adapter version id, weight) terms: the same
    adapters and weights, the same key. Order does not matter (the sum does not depend on it);
    weights are rounded to 6 digits.
    """
    parts = sorted(f"{version_id}:{weight:.6f}" for version_id, weight in terms)
    return "viz-" + hashlib.sha256("+".join(parts).encode()).hexdigest()[:16]


def stack(
    parts: Sequence[tuple[LoadedAdapter, float]], *, base_id: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(tensors, PEFT config) of the one LoRA whose delta is the weighted sum of `parts`.

    Raises:
        InvalidInput: no adapters, or two adapters disagree on a module's shape.
    """
    import torch  # deferred: torch is heavy, the gateway never needs it

    if not parts:
        raise InvalidInput("a stacked adapter needs at least one adapter")
    shapes: dict[str, tuple[int, int]] = {}  # module -> (in features, out features)
    for adapter, _ in parts:
        for module, (a, b) in adapter.modules.items():
            shape = (int(a.shape[1]), int(b.shape[0]))
            if shapes.setdefault(module, shape) != shape:
                raise InvalidInput(
                    f"{adapter.label} adapts {module} as {shape[0]} -> {shape[1]}, another "
                    f"adapter as {shapes[module][0]} -> {shapes[module][1]}: not the same base"
                )
    rank = sum(adapter.rank for adapter, _ in parts)
    tensors: dict[str, Any] = {}
    for module in sorted(shapes):
        features_in, features_out = shapes[module]
        a_blocks, b_blocks = [], []
        for adapter, weight in parts:
            pair = adapter.modules.get(module)
            if pair is None:
                a_blocks.append(torch.zeros(adapter.rank, features_in))
                b_blocks.append(torch.zeros(features_out, adapter.rank))
            else:
                a_blocks.append(pair[0].float() * (weight * adapter.scaling))
                b_blocks.append(pair[1].float())
        tensors[f"{_PREFIX}{module}.lora_A.weight"] = torch.cat(a_blocks, 0).contiguous()
        tensors[f"{_PREFIX}{module}.lora_B.weight"] = torch.cat(b_blocks, 1).contiguous()
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_id,
        "r": rank,
        "lora_alpha": rank,  # scale 1: the weights and scalings are inside A
        "use_rslora": False,
        "lora_dropout": 0.0,
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "target_modules": sorted({module.rsplit(".", 1)[-1] for module in shapes}),
    }
    return tensors, config


def write_stacked(
    out_dir: Path, parts: Sequence[tuple[LoadedAdapter, float]], *, base_id: str
) -> Path:
    """Write the stacked adapter of `parts` as a PEFT folder `out_dir/<composition key>`.

    Written once: an existing folder is reused. The folder appears complete or not at all
    (written beside it, then renamed), so a server reading the directory never sees half of it.
    """
    from safetensors.torch import save_file  # deferred: torch is heavy

    folder = out_dir / composition_key([(a.version_id, weight) for a, weight in parts])
    if (folder / "adapter_config.json").is_file():
        return folder
    tensors, config = stack(parts, base_id=base_id)
    made_of = [
        {"adapter": adapter.label, "version_id": adapter.version_id, "weight": weight}
        for adapter, weight in parts
    ]
    staging = out_dir / f".{folder.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    save_file(tensors, str(staging / "adapter_model.safetensors"))
    (staging / "adapter_config.json").write_text(json.dumps(config, indent=2))
    (staging / COMPOSITION_FILE).write_text(json.dumps(made_of, indent=2))
    try:
        staging.rename(folder)
    except OSError:  # another process wrote it first: theirs is the same adapter
        shutil.rmtree(staging, ignore_errors=True)
    return folder
