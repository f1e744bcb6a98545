"""Perplexity of a model on token windows: the number a creator is paid for improving."""

from __future__ import annotations

import math
from collections.abc import Sequence
from importlib import resources
from typing import Any

from viz.training.dataset import windows as token_windows

__all__ = ["EVALUATION_WINDOWS_MAX", "general_windows", "perplexity", "perplexities", "spread"]

EVAL_BATCH = 4
# Windows per perplexity, evenly spaced over a set: 4,000 tokens at 128 a window compare base and
# adapter (measured on the same windows) well, and the evaluation before and after training
# stays seconds whatever the corpus.
EVALUATION_WINDOWS_MAX = 32


def spread(
    windows: Sequence[tuple[int, ...]], most: int = EVALUATION_WINDOWS_MAX
) -> tuple[tuple[int, ...], ...]:
    """At most `most` of `windows`, evenly spaced over all of them (all when there are fewer)."""
    if len(windows) <= most:
        return tuple(windows)
    return tuple(windows[i * len(windows) // most] for i in range(most))


def perplexity(
    model: Any, windows: Sequence[tuple[int, ...]], *, batch_size: int = EVAL_BATCH
) -> float:
    """exp(mean next-token negative log-likelihood) over every predicted token in `windows`."""
    # deferred: torch is heavy
    import torch

    if not windows:
        return float("nan")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total_loss, total_tokens = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(windows), batch_size):
            batch = torch.tensor(windows[start : start + batch_size], device=device)
            logits = model(input_ids=batch).logits.float()
            loss = torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.size(-1)),
                batch[:, 1:].reshape(-1),
                reduction="sum",
            )
            total_loss += float(loss)
            total_tokens += batch[:, 1:].numel()
    model.train(was_training)
    return math.exp(total_loss / total_tokens)


def perplexities(
    model: Any,
    held_out: Sequence[tuple[int, ...]],
    general: Sequence[tuple[int, ...]],
    *,
    adapter: bool = True,
) -> dict[str, float]:
    """Perplexity on the held-out and the general windows, with the PEFT adapter on or off."""
    if adapter:
        return {"held_out": perplexity(model, held_out), "general": perplexity(model, general)}
    with model.disable_adapter():
        return {"held_out": perplexity(model, held_out), "general": perplexity(model, general)}


def general_windows(tokenizer: Any, sequence_length: int) -> list[tuple[int, ...]]:
    """Windows of a fixed general-English sample (written for Viz, shipped in the package),
    to measure how much an adapter costs on text outside its domain."""
    text = resources.files("viz.training").joinpath("general_sample.txt").read_text()
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    length = min(sequence_length, len(ids))
    return token_windows(ids, length, length // 4)
