"""Optimizer state in checkpoints: safetensors for tensors, JSON for the rest, for torch's AdamW
and for bitsandbytes' 8-bit AdamW (QLoRA's optimizer, whose quantisation state is nested one
level down; a checkpoint of it failed on the first GPU run)."""

from __future__ import annotations

import json

import bitsandbytes as bnb
import pytest
import torch
from safetensors.torch import load_file, save_file

from viz.training.checkpoint import flatten_optimizer, unflatten_optimizer


@pytest.mark.parametrize("optimizer_class", [torch.optim.AdamW, bnb.optim.AdamW8bit])
def test_an_optimizer_state_survives_a_checkpoint_and_the_next_step_is_the_same(
    optimizer_class, tmp_path
) -> None:
    torch.manual_seed(0)
    weights = torch.randn(4096)
    gradients = [torch.randn(4096) for _ in range(3)]

    def run(steps: list[torch.Tensor], state: dict | None = None) -> tuple[torch.Tensor, object]:
        parameter = torch.nn.Parameter(weights.clone())
        optimizer = optimizer_class([parameter], lr=1e-2)
        if state is not None:
            optimizer.load_state_dict(state)
        for gradient in steps:
            parameter.grad = gradient.clone()
            optimizer.step()
        return parameter.detach(), optimizer

    straight, _ = run(gradients)
    first, optimizer = run(gradients[:2])
    tensors, rest = flatten_optimizer(optimizer.state_dict())
    save_file(tensors, tmp_path / "optimizer.safetensors")
    (tmp_path / "state.json").write_text(json.dumps(rest))

    saved = unflatten_optimizer(
        load_file(tmp_path / "optimizer.safetensors"),
        json.loads((tmp_path / "state.json").read_text()),
    )
    parameter = torch.nn.Parameter(first.clone())
    resumed = optimizer_class([parameter], lr=1e-2)
    resumed.load_state_dict(saved)
    parameter.grad = gradients[2].clone()
    resumed.step()
    assert torch.equal(parameter.detach(), straight)
