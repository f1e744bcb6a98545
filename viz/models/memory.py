"""Memory per precision variant: estimated from the architecture, measured from a loaded model.

Estimate (bytes), with P_lin the weights of the decoder's linear layers (quantised by NF4) and
P_rest everything else (embeddings, norms, a tied or untied head, kept in bf16 under NF4):

    fp32 = 4 (P_lin + P_rest)          bf16 = 2 (P_lin + P_rest)
    nf4  = P_lin (0.5 + 1/64 + 4/(64*256)) + 2 P_rest

NF4 stores two 4-bit codes per byte; double quantisation stores one 8-bit absmax per block of 64
weights plus one fp32 scale per 256 absmax values (QLoRA paper, section 3). For SmolLM2-135M,
P_lin = 106.2M and P_rest = 28.3M, so nf4 / fp32 = 0.21: the embedding table dominates a model
this small; on a 7B model the ratio nears 0.13.

The estimate and `measured_bytes` describe a model just after loading. On CPUs with AVX512-BF16,
bitsandbytes 0.50 repacks the 4-bit weights at the first forward pass and undoes double
quantisation (absmax becomes bf16), so an nf4 model that has generated holds ~1.5% more
(`bench/generate.py` measures both).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["VariantMemory", "estimate_memory", "measured_bytes", "parameter_split"]

NF4_BYTES_PER_WEIGHT = 0.5 + 1 / 64 + 4 / (64 * 256)
BYTES_PER_PARAMETER = {"fp32": 4.0, "bf16": 2.0}


@dataclass(frozen=True)
class VariantMemory:
    precision: str
    estimated_bytes: int
    measured_bytes: int | None = None


def parameter_split(config: Any) -> tuple[int, int]:
    """(linear-layer weights NF4 would quantise, all other parameters) for a model config.

    Builds the model on the meta device, so no memory is allocated.
    """
    # deferred: torch and transformers are heavy
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    linear = 0
    head = model.get_output_embeddings()
    for module in model.modules():
        if isinstance(module, torch.nn.Linear) and module is not head:
            linear += module.weight.numel()
    total = sum(parameter.numel() for parameter in model.parameters())
    return linear, total - linear


def estimate_memory(linear_parameters: int, other_parameters: int) -> dict[str, int]:
    """Estimated weight bytes per precision variant."""
    total = linear_parameters + other_parameters
    estimates = {name: int(total * size) for name, size in BYTES_PER_PARAMETER.items()}
    estimates["nf4"] = int(linear_parameters * NF4_BYTES_PER_WEIGHT + 2 * other_parameters)
    return estimates


def measured_bytes(model: Any) -> int:
    """Bytes actually held by a loaded model's parameters, buffers and 4-bit quantisation state.

    Tied parameters are counted once.
    """
    seen: set[int] = set()
    total = 0
    for tensor in list(model.parameters()) + list(model.buffers()):
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        total += tensor.numel() * tensor.element_size()
        quant_state = getattr(tensor, "quant_state", None)
        if quant_state is not None:
            total += _quant_state_bytes(quant_state)
    return total


def _quant_state_bytes(quant_state: Any) -> int:
    total = 0
    for name in ("absmax", "offset"):
        value = getattr(quant_state, name, None)
        if value is not None and hasattr(value, "numel"):
            total += value.numel() * value.element_size()
    nested = getattr(quant_state, "state2", None)
    if nested is not None:
        total += _quant_state_bytes(nested)
    return total
