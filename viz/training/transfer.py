"""Downstream transfer: a child adapter that starts from what its parent chain already knows.

    start = transfer_start("on-top", [english_folder, nlp_folder], base_folder=folder)
    train_adapter(..., start=start)

Three ways for a sub-domain adapter to begin, besides a fresh LoRA on the base (`scratch`):

- `init`    the child starts as a copy of its parent's weights (same LoRA shape) and is trained
            on its own documents: it is served alone, in place of the parent;
- `on-top`  the parent chain's updates are merged into the base weights while the child trains,
            so the child learns only what the chain lacks; it is served after the chain
            (chain + child, every weight 1), which is how children and parents then add up;
- `distil`  a fresh LoRA trained on the child's documents with an extra loss, `strength` x
            KL(chain || child) over every next-token distribution (Hinton et al. 2015 at
            temperature 1): the parent chain is the teacher; the child is served alone.

`on-top` and `distil` need the base in fp32 or bf16: an update cannot be merged into NF4 weights
without re-quantising them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from viz.errors import InvalidInput
from viz.models.loading import load_folder
from viz.store.blobs import sha256_bytes
from viz.training.adapters import read_manifest
from viz.training.continual import load_lora_weights, set_lora_weights
from viz.training.trainer import Start

__all__ = ["TRANSFERS", "chain_deltas", "merge_chain", "transfer_start"]

TRANSFERS = ("scratch", "init", "on-top", "distil")
DISTIL_STRENGTH = 1.0


def transfer_start(
    kind: str,
    chain: Sequence[Path],
    *,
    base_folder: Path,
    precision: str,
    strength: float = DISTIL_STRENGTH,
) -> Start | None:
    """The trainer's `Start` for a child of `chain` (PEFT folders, most general first).

    Raises:
        InvalidInput: an unknown kind, no chain, or a chain that cannot be merged (NF4 base).
    """
    if kind not in TRANSFERS:
        raise InvalidInput(f"transfer {kind!r} is not one of {', '.join(TRANSFERS)}")
    if kind == "scratch":
        return None
    if not chain:
        raise InvalidInput(f"transfer {kind!r} needs the parent adapter (--from-parent NAME)")
    if kind in ("on-top", "distil") and precision == "nf4":
        raise InvalidInput(
            f"transfer {kind!r} merges the parent chain into the base weights, which NF4 "
            "cannot hold: train with --method lora (fp32 or bf16 base)"
        )
    record: dict[str, Any] = {
        "kind": kind,
        "chain": [
            {
                "name": read_manifest(folder).get("name", folder.name),
                "weights_sha256": sha256_bytes((folder / "adapter_model.safetensors").read_bytes()),
            }
            for folder in chain
        ],
        "serve_as": "chain + child" if kind == "on-top" else "child alone",
    }
    if kind == "init":
        parent = load_lora_weights(chain[-1])
        return Start(lambda model: set_lora_weights(model, parent), record=record)
    deltas = chain_deltas(chain)
    if kind == "on-top":
        return Start(lambda model: merge_chain(model, deltas), record=record)
    teacher: dict[str, Any] = {}

    def load_teacher(model: Any) -> None:
        teacher["model"] = load_folder(base_folder, precision)
        merge_chain(teacher["model"], deltas)
        teacher["model"].eval()

    def distillation(model: Any, batch: Any, logits: Any) -> Any:
        # deferred: torch is heavy
        import torch

        with torch.no_grad():
            target = teacher["model"](input_ids=batch).logits.float().log_softmax(-1)
        student = logits.float().log_softmax(-1)
        kl = torch.nn.functional.kl_div(student, target, log_target=True, reduction="none")
        return strength * kl.sum(-1).mean()

    record["strength"] = strength
    return Start(load_teacher, extra_loss=distillation, record=record)


def chain_deltas(chain: Sequence[Path], weights: Sequence[float] | None = None) -> dict[str, Any]:
    """module name -> the summed dense update (weight x alpha / r x B @ A) of every adapter."""
    deltas: dict[str, Any] = {}
    for index, folder in enumerate(chain):
        config = json.loads((folder / "adapter_config.json").read_text())
        scale = config["lora_alpha"] / config["r"] * (weights[index] if weights else 1.0)
        tensors = load_lora_weights(folder)
        for name, a in tensors.items():
            if not name.endswith("lora_A.weight"):
                continue
            b = tensors[name.replace("lora_A.weight", "lora_B.weight")]
            module = name.removeprefix("base_model.model.").removesuffix(".lora_A.weight")
            delta = scale * (b.float() @ a.float())
            deltas[module] = deltas[module] + delta if module in deltas else delta
    return deltas


def merge_chain(model: Any, deltas: dict[str, Any]) -> None:
    """Add each module's update to the base weight under it (PEFT-wrapped or plain model)."""
    # deferred: torch is heavy
    import torch

    modules = dict(model.named_modules())
    missing = []
    with torch.no_grad():
        for name, delta in deltas.items():
            module = modules.get(name) or modules.get(f"base_model.model.{name}")
            if module is None:
                missing.append(name)
                continue
            layer: Any = getattr(module, "base_layer", module)
            if layer.weight.dtype not in (torch.float32, torch.bfloat16, torch.float16):
                raise InvalidInput(
                    f"cannot merge the parent chain into {layer.weight.dtype} weights"
                )
            layer.weight += delta.to(layer.weight.dtype)
    if missing:
        raise InvalidInput(
            f"the parent chain adapts {len(missing)} module(s) this base lacks, e.g. {missing[0]}"
        )
