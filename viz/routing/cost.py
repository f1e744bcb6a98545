"""What a base variant costs in memory for a given context: weights + KV cache + adapters.

    weights  = viz.models.memory.estimate_memory(...)[precision]
    kv cache = 2 (K and V) x layers x kv_heads x head_dim x context tokens x bytes per value
    adapters = the resident adapters' safetensors bytes

The KV cache holds activations in the compute dtype: 4 bytes per value for an fp32 model, 2 for
bf16 and for NF4 (whose compute dtype is bf16). `tests/test_routing_cost.py` checks the KV
formula against the cache a real forward pass of the default model allocates.

    footprint = footprint_bytes(config, linear, other, "nf4", context_tokens=4096)
    footprint.total <= hardware.budget_bytes
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from viz.errors import InvalidInput
from viz.models.memory import estimate_memory

__all__ = ["Footprint", "footprint_bytes", "kv_cache_bytes"]

COMPUTE_BYTES = {"fp32": 4, "bf16": 2, "nf4": 2}
CONTEXT_MAX = 1_048_576


@dataclass(frozen=True)
class Footprint:
    precision: str
    weights: int
    kv_cache: int
    adapters: int

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.adapters


def kv_cache_bytes(config: Any, context_tokens: int, precision: str) -> int:
    """Bytes of keys and values for `context_tokens` tokens (one sequence) in `precision`."""
    if precision not in COMPUTE_BYTES:
        raise InvalidInput(f"precision {precision!r} is not one of {', '.join(COMPUTE_BYTES)}")
    if isinstance(context_tokens, bool) or not 0 <= context_tokens <= CONTEXT_MAX:
        raise InvalidInput(f"context of {context_tokens!r} tokens must be 0..{CONTEXT_MAX}")
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    values = 2 * config.num_hidden_layers * kv_heads * head_dim * context_tokens
    return values * COMPUTE_BYTES[precision]


def footprint_bytes(
    config: Any,
    linear_parameters: int,
    other_parameters: int,
    precision: str,
    *,
    context_tokens: int,
    adapter_bytes: int = 0,
) -> Footprint:
    """The memory one sequence of `context_tokens` needs on `precision` weights with adapters."""
    weights = estimate_memory(linear_parameters, other_parameters)[precision]
    kv = kv_cache_bytes(config, context_tokens, precision)
    return Footprint(precision, weights, kv, adapter_bytes)
