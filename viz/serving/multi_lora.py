"""Many LoRA adapters in one batch, each row its own weighted mix, without merging weights.

Every linear layer of the base gets a forward hook. For the batch being run, the hook adds, for
each adapter in use, its low-rank product on just the rows that use it (gathered, then
scattered back, as Punica/S-LoRA do):

    y = x @ W^T  +  sum over adapters a of  w[row, a] * scaling_a * (x[rows_a] @ A_a^T) @ B_a^T

The base matmul is shared by all rows; an adapter costs only its rows x rank. A row with weights
(0.7, 0.5) gets the weighted sum of two deltas, which is what merging 0.7 x delta_1 + 0.5 x delta_2
into W would give, without touching W.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from viz.serving.loaded_adapter import LoadedAdapter

__all__ = ["LoraBatch", "install_hooks"]


@dataclass
class LoraBatch:
    """Who uses what in the next forward pass: set by the engine before each call."""

    adapters: list[LoadedAdapter] = field(default_factory=list)
    rows: list[Any] = field(default_factory=list)  # per adapter: LongTensor of row indices
    weights: list[Any] = field(default_factory=list)  # per adapter: weight per selected row

    @classmethod
    def for_rows(cls, mixes: list[list[tuple[LoadedAdapter, float]]]) -> LoraBatch:
        """`mixes[row]` lists (adapter, weight) for that row of the batch."""
        import torch

        by_id: dict[int, int] = {}
        batch = cls()
        selected: list[list[int]] = []
        scale: list[list[float]] = []
        for row, mix in enumerate(mixes):
            for adapter, weight in mix:
                if adapter.version_id not in by_id:
                    by_id[adapter.version_id] = len(batch.adapters)
                    batch.adapters.append(adapter)
                    selected.append([])
                    scale.append([])
                index = by_id[adapter.version_id]
                selected[index].append(row)
                scale[index].append(weight * adapter.scaling)
        batch.rows = [torch.tensor(rows, dtype=torch.long) for rows in selected]
        batch.weights = [torch.tensor(ws, dtype=torch.float32) for ws in scale]
        return batch


def install_hooks(model: Any, current: list[LoraBatch | None]) -> list[Any]:
    """Hook every linear layer of `model` (but the output head) to add the LoRA deltas of
    `current[0]`; returns the hook handles."""
    import torch

    handles = []
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear) or name.endswith("lm_head"):
            continue
        handles.append(module.register_forward_hook(_hook(name, current)))
    return handles


def _hook(name: str, current: list[LoraBatch | None]) -> Any:
    import torch
    import torch.nn.functional as F  # noqa: N812

    def add_deltas(_module: Any, inputs: tuple[Any, ...], output: Any) -> Any:
        batch = current[0]
        if batch is None or not batch.adapters:
            return output
        x = inputs[0]
        delta = None
        for adapter, rows, weights in zip(batch.adapters, batch.rows, batch.weights, strict=True):
            pair = adapter.modules.get(name)
            if pair is None:
                continue
            a, b = pair
            part = F.linear(F.linear(x[rows].to(a.dtype), a), b)
            part = part * weights.view(-1, *([1] * (part.dim() - 1)))
            if delta is None:
                delta = torch.zeros(output.shape, dtype=part.dtype, device=output.device)
            delta.index_add_(0, rows, part)
        if delta is None:
            return output
        return output + delta.to(output.dtype)

    return add_deltas
