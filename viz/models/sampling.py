"""From a row of logits to one token: logit bias, penalties, a grammar's mask, then greedy or
temperature and top-p sampling; and the log-probabilities reported with each token.

The order is vLLM's, so both engines choose alike: logit bias, then the repetition penalty
(over prompt and answer), then OpenAI's frequency and presence penalties (over the answer),
then the grammar's mask, then temperature and top-p.

    logits = adjust(logits, settings, prompt_ids, generated)
    token = sample(logits, settings, generator)
    entry = score(raw_logits, token, top=settings.logprobs)    # if logprobs were asked for
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the settings live with the decoding loop, which imports this module
    from viz.models.generate import GenerationSettings

__all__ = ["GREEDY_BELOW", "Scored", "adjust", "sample", "score"]

GREEDY_BELOW = 1e-4  # temperatures this small sample greedily (the limit of softmax(l / t))


@dataclass(frozen=True)
class Scored:
    """One generated token with its log-probability and the most likely alternatives, from the
    model's own distribution (before bias, penalties and temperature, as vLLM reports)."""

    token: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()


def adjust(
    logits: Any, settings: GenerationSettings, prompt_ids: Sequence[int], generated: Sequence[int]
) -> Any:
    """`logits` with the bias and penalties of `settings` applied (a new tensor if any is)."""
    import torch  # deferred: torch is heavy

    if not (
        settings.logit_bias
        or generated
        and (settings.frequency_penalty or settings.presence_penalty)
        or settings.repetition_penalty != 1.0
    ):
        return logits
    logits = logits.float().clone()
    size = logits.shape[-1]
    if settings.logit_bias:
        ids = torch.tensor([token for token, _ in settings.logit_bias if token < size])
        bias = torch.tensor([b for token, b in settings.logit_bias if token < size])
        logits[ids] += bias
    if settings.repetition_penalty != 1.0:
        seen = torch.tensor(sorted({*prompt_ids, *generated}), dtype=torch.long)
        seen = seen[seen < size]
        values = logits[seen]
        penalty = settings.repetition_penalty
        logits[seen] = torch.where(values > 0, values / penalty, values * penalty)
    if generated and (settings.frequency_penalty or settings.presence_penalty):
        counts = torch.bincount(torch.tensor(list(generated)), minlength=size)[:size].float()
        logits -= counts * settings.frequency_penalty
        logits -= (counts > 0).float() * settings.presence_penalty
    return logits


def sample(logits: Any, settings: GenerationSettings, generator: Any) -> int:
    """One token id from `logits`: greedy at temperature 0, else temperature and top-p."""
    import torch  # deferred: torch is heavy

    logits = logits.float()
    if settings.temperature < GREEDY_BELOW:  # dividing by a tiny temperature overflows
        return int(torch.argmax(logits))
    probabilities = torch.softmax(logits / settings.temperature, dim=-1)
    if settings.top_p < 1.0:
        sorted_probabilities, order = torch.sort(probabilities, descending=True)
        cumulative = torch.cumsum(sorted_probabilities, dim=-1)
        # Keep the smallest prefix whose mass reaches top_p (always at least one token).
        outside = cumulative - sorted_probabilities >= settings.top_p
        outside[0] = False  # a top_p below float32's smallest number still keeps one token
        sorted_probabilities[outside] = 0.0
        probabilities = torch.zeros_like(probabilities).scatter(0, order, sorted_probabilities)
    return int(torch.multinomial(probabilities, 1, generator=generator))


def score(logits: Any, token: int, *, top: int) -> Scored:
    """`token`'s log-probability under `logits` (the model's raw output) and the `top` most
    likely tokens with theirs."""
    import torch  # deferred: torch is heavy

    logprobs = torch.log_softmax(logits.float(), dim=-1)
    best: tuple[tuple[int, float], ...] = ()
    if top:
        values, ids = torch.topk(logprobs, top)
        best = tuple((int(i), float(v)) for i, v in zip(ids, values, strict=True))
    return Scored(token, float(logprobs[token]), best)
