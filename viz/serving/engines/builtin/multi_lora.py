"""Many LoRA adapters in one batch, each row its own weighted mix, without merging weights.

Every linear layer of the base gets a forward hook that adds each row's own low-rank delta to
the shared base matmul:

    y[row] = x[row] @ W^T + sum over the row's adapters a: w_a scaling_a x[row] @ A_a^T @ B_a^T

Two ways, the same sum:
- one row (a prefill): loop over its adapters, exactly as PEFT computes a LoRA layer;
- a decode batch: per module, each row's A matrices are gathered into one padded stack
  [rows, rank, in] and its B matrices (a composition's scaled by w_a * scaling_a and concatenated
  along the rank) into [rows, out, rank], once per batch membership, so every step costs two
  batched matmuls per module whatever the mix (Punica's BGMV, S-LoRA's gather).
A row with weights (0.7, 0.5) gets 0.7 x delta_1 + 0.5 x delta_2, what merging them into W would
give, without touching W.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from viz.serving.engines.lora import LoadedAdapter

__all__ = ["LoraBatch", "install_hooks"]


@dataclass
class LoraBatch:
    """Who uses what in the next forward pass: set by the engine before each call."""

    adapters: list[LoadedAdapter] = field(default_factory=list)
    rows: list[Any] = field(default_factory=list)  # per adapter: LongTensor of row indices
    weights: list[Any] = field(default_factory=list)  # per adapter: weight per selected row
    mixes: list[list[tuple[LoadedAdapter, float]]] = field(default_factory=list)
    stacks: dict[str, Any] = field(default_factory=dict)  # module -> (A, B, scale) or None

    def stacked(self, name: str) -> Any:
        """(A [rows, R, in], B [rows, out, R], scale [rows]) for module `name`, built once."""
        if name not in self.stacks:
            self.stacks[name] = _stack(name, self.mixes)
        return self.stacks[name]

    @classmethod
    def for_rows(cls, mixes: list[list[tuple[LoadedAdapter, float]]]) -> LoraBatch:
        """`mixes[row]` lists (adapter, weight) for that row of the batch."""
        import torch  # deferred: torch is heavy

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
        batch.mixes = [list(mix) for mix in mixes]
        return batch


def _stack(name: str, mixes: list[list[tuple[LoadedAdapter, float]]]) -> Any:
    import torch  # deferred: torch is heavy

    parts = [
        [(a.modules[name], w * a.scaling) for a, w in mix if name in a.modules] for mix in mixes
    ]
    if not any(parts):
        return None
    (a0, b0) = next(pair for row in parts for pair, _ in row)
    rank = max(sum(a.shape[0] for (a, _), _ in row) for row in parts)
    stack_a = torch.zeros((len(parts), rank, a0.shape[1]), dtype=a0.dtype)
    stack_b = torch.zeros((len(parts), b0.shape[0], rank), dtype=b0.dtype)
    scale = torch.ones(len(parts), dtype=torch.float32)
    for row, pairs in enumerate(parts):
        offset = 0
        for (a, b), factor in pairs:
            r = a.shape[0]
            stack_a[row, offset : offset + r] = a
            if len(pairs) == 1:  # scale after the product, as PEFT does
                stack_b[row, :, offset : offset + r] = b
                scale[row] = factor
            else:
                stack_b[row, :, offset : offset + r] = b * factor
            offset += r
    return stack_a, stack_b, scale


def install_hooks(model: Any, current: list[LoraBatch | None]) -> list[Any]:
    """Hook every linear layer of `model` (but the output head) to add the LoRA deltas of
    `current[0]`; returns the hook handles."""
    import torch  # deferred: torch is heavy

    handles = []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and not name.endswith("lm_head"):
            handles.append(module.register_forward_hook(_hook(name, current)))
    return handles


def _hook(name: str, current: list[LoraBatch | None]) -> Any:
    import torch  # deferred: torch is heavy
    import torch.nn.functional as F  # noqa: N812  # deferred: torch is heavy

    def add_deltas(_module: Any, inputs: tuple[Any, ...], output: Any) -> Any:
        batch = current[0]
        if batch is None or not batch.adapters:
            return output
        x = inputs[0]
        if x.shape[0] > 1:  # a decode batch: two batched matmuls per module
            stacked = batch.stacked(name)
            if stacked is None:
                return output
            stack_a, stack_b, scale = stacked
            low = torch.bmm(x.to(stack_a.dtype), stack_a.transpose(1, 2))
            delta = torch.bmm(low, stack_b.transpose(1, 2)) * scale.view(-1, 1, 1)
            return (output + delta).to(output.dtype)  # add in float32, cast once, as PEFT
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
        return (output + delta).to(output.dtype)

    return add_deltas
