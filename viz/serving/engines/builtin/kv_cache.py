"""The running batch's KV cache: new rows stacked on, finished rows dropped.

Rows of different lengths share one cache, left-padded to the longest, with an attention mask
(1 = a real token, 0 = padding) the engine extends by one column per decoded token.
"""

from __future__ import annotations

from typing import Any

__all__ = ["keep_rows", "stack"]


def stack(running: tuple[Any, Any] | None, caches: list[Any], config: Any, device: Any) -> Any:
    """Left-pad the running batch's (cache, mask) and new rows' caches to one length and stack
    them; returns the new (cache, mask)."""
    import torch  # deferred: torch is heavy
    from transformers import DynamicCache  # deferred: transformers is heavy

    parts: list[tuple[list[Any], list[Any], Any]] = []  # keys, values, mask per group
    if running is not None:
        layers, running_mask = running[0].layers, running[1]
        parts.append(([la.keys for la in layers], [la.values for la in layers], running_mask))
    for cache in caches:
        length = cache.layers[0].keys.shape[2]
        mask = torch.ones((1, length), dtype=torch.long, device=device)
        parts.append(([la.keys for la in cache.layers], [la.values for la in cache.layers], mask))
    longest = max(mask.shape[1] for _, _, mask in parts)

    def pad(tensor: Any, dim: int, size: int) -> Any:
        missing = size - tensor.shape[dim]
        if missing == 0:
            return tensor
        shape = list(tensor.shape)
        shape[dim] = missing
        return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)

    layer_count = len(parts[0][0])
    data = []
    for layer in range(layer_count):
        keys = torch.cat([pad(p[0][layer], 2, longest) for p in parts], dim=0)
        values = torch.cat([pad(p[1][layer], 2, longest) for p in parts], dim=0)
        data.append((keys, values))
    cache = DynamicCache(ddp_cache_data=data, config=config)
    return cache, torch.cat([pad(p[2], 1, longest) for p in parts], dim=0)


def keep_rows(cache: Any, mask: Any, keep: list[int], device: Any) -> Any:
    """Keep rows `keep` of `cache` (in place) and of `mask`, without padding columns none of
    them needs; returns the new mask."""
    import torch  # deferred: torch is heavy

    index = torch.tensor(keep, device=device)
    mask = mask.index_select(0, index)
    start = int((mask.sum(dim=0) > 0).nonzero()[0])
    for layer in cache.layers:
        layer.keys = layer.keys.index_select(0, index)[:, :, start:]
        layer.values = layer.values.index_select(0, index)[:, :, start:]
    return mask[:, start:]
