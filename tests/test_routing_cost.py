"""Routing, part 2: the memory cost model, checked against the real default model."""

from __future__ import annotations

import pytest

from viz.errors import InvalidInput
from viz.routing.cost import footprint_bytes, kv_cache_bytes
from viz.routing.hardware import parse_hardware


def test_the_kv_formula_matches_the_cache_a_real_forward_pass_allocates(smollm2) -> None:
    import torch

    ids = torch.randint(100, 1000, (1, 37))
    with torch.inference_mode():
        cache = smollm2.model(ids, use_cache=True).cache
    allocated = 0
    for layer in cache.layers:
        allocated += layer.keys.numel() * layer.keys.element_size()
        allocated += layer.values.numel() * layer.values.element_size()
    assert allocated == kv_cache_bytes(smollm2.model.config, 37, "fp32")


def test_a_footprint_adds_weights_cache_and_adapters(smollm2) -> None:
    from viz.models.memory import measured_bytes, parameter_split

    config = smollm2.model.config
    linear, other = parameter_split(config)
    fp32 = footprint_bytes(config, linear, other, "fp32", context_tokens=2048, adapter_bytes=10)
    assert fp32.weights == pytest.approx(
        measured_bytes(smollm2.model), rel=1e-5
    )  # + rotary buffers
    assert fp32.kv_cache == kv_cache_bytes(config, 2048, "fp32") > 0
    assert fp32.total == fp32.weights + fp32.kv_cache + 10
    nf4 = footprint_bytes(config, linear, other, "nf4", context_tokens=2048)
    assert nf4.total < fp32.total / 3
    assert nf4.kv_cache * 2 == fp32.kv_cache, "NF4 computes in bf16"
    # The 135M model fits a Raspberry Pi's budget in every precision, even with an 8k context.
    pi = parse_hardware("raspberry-pi-4gb")
    big = footprint_bytes(config, linear, other, "fp32", context_tokens=8192)
    assert big.total < pi.budget_bytes


def test_bad_contexts_and_precisions_are_refused(smollm2) -> None:
    with pytest.raises(InvalidInput, match="context"):
        kv_cache_bytes(smollm2.model.config, -1, "fp32")
    with pytest.raises(InvalidInput, match="precision"):
        kv_cache_bytes(smollm2.model.config, 10, "fp8")
