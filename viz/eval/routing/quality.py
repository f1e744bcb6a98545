"""Answer quality in `viz eval routing`: does the chain a query is routed to answer it better?

On a sample of questions with a reference answer: the perplexity of the reference answer after
the question, and the token F1 of a greedy answer, for the base alone, the chain the
hierarchical walk chose (auto), its last level alone (what the chain's upper levels add; weights
as the recommender sets them, and every level at 1), and the full chain ending in the query's
own sub-domain (an oracle) or in a wrong one (the next in SUBDOMAINS order).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from viz.datasets.qasper import Question
from viz.eval.metrics import answer_scores, mean, reference_text
from viz.eval.routing.plan import SUBDOMAINS
from viz.models.generate import GenerationSettings, chat_prompt_ids, generate_text
from viz.models.loading import load_model
from viz.routing.options import ANCESTOR_DECAY
from viz.serving.engines.builtin import LoraBatch, install_hooks
from viz.store.schema import BaseModel

__all__ = ["answer_quality", "configurations"]

Chains = dict[str, tuple[Callable[[dict[str, Any]], list[str]], Any]]


def answer_quality(
    base: BaseModel,
    models_dir: Path,
    adapters: dict[str, Any],
    questions: list[Question],
    routed: list[dict[str, Any]],
    chooser: random.Random,
    *,
    quality_questions: int,
    max_tokens: int,
    say: Callable[[str], None],
) -> tuple[int, dict[str, dict[str, float | None]]]:
    """(questions scored, per configuration: reference-answer perplexity and token F1)."""
    loaded = load_model(base, models_dir, precision="fp32")
    model, tokenizer = loaded.model, loaded.tokenizer
    current: list[Any] = [None]
    install_hooks(model, current)
    sample = [(i, reference) for i, q in enumerate(questions) if (reference := _reference(q))]
    chooser.shuffle(sample)
    sample = sample[:quality_questions]
    chains = configurations()
    scores: dict[str, dict[str, list[float]]] = {c: {"nll": [], "f1": []} for c in chains}
    for done, (index, reference) in enumerate(sample, 1):
        question = questions[index]
        messages = [{"role": "user", "content": question.question}]
        for name, (chain_of, weights_of) in chains.items():
            chain = chain_of(routed[index])
            weights = weights_of(len(chain)) if chain else []
            mix = [(adapters[a], w) for a, w in zip(chain, weights, strict=True)]
            current[0] = LoraBatch.for_rows([mix]) if mix else None
            scores[name]["nll"].append(_answer_nll(model, tokenizer, messages, reference))
            stream = generate_text(
                model, tokenizer, messages, GenerationSettings(max_tokens=max_tokens)
            )
            prediction = "".join(stream)
            scores[name]["f1"].append(answer_scores(prediction, list(question.answers))[1])
        current[0] = None
        if done % 10 == 0:
            say(f"answer quality: {done}/{len(sample)} questions")
    return len(sample), {
        name: {
            "perplexity": math.exp(sum(v["nll"]) / len(v["nll"])) if v["nll"] else None,
            "token_f1": mean(v["f1"]),
        }
        for name, v in scores.items()
    }


def configurations() -> Chains:
    """Name -> (the chain of adapters for a routed query, the weights for a chain's length)."""
    leaves = list(SUBDOMAINS)

    def wrong(r: dict[str, Any]) -> list[str]:
        return ["english", "nlp-research", leaves[(leaves.index(r["label"]) + 1) % len(leaves)]]

    return {
        "base": (lambda _r: [], None),
        "auto (weights 0.25 / 0.5 / 1)": (lambda r: r["path"], _decayed),
        "auto, every level at 1": (lambda r: r["path"], lambda n: [1.0] * n),
        "auto, last level alone": (lambda r: r["path"][-1:], _decayed),
        "right sub-domain, oracle (0.25 / 0.5 / 1)": (
            lambda r: ["english", "nlp-research", r["label"]],
            _decayed,
        ),
        "wrong sub-domain (0.25 / 0.5 / 1)": (wrong, _decayed),
    }


def _answer_nll(model: Any, tokenizer: Any, messages: list[dict[str, str]], answer: str) -> float:
    """Mean negative log-likelihood per token of `answer` as the assistant's reply."""
    import torch  # deferred: torch is heavy

    prompt = chat_prompt_ids(tokenizer, messages, prompt_tokens_max=1024)
    reply = tokenizer(answer, add_special_tokens=False)["input_ids"][:128]
    ids = torch.tensor([prompt + reply])
    with torch.inference_mode():
        logits = model(ids).logits[0, len(prompt) - 1 : -1].float()
    return float(torch.nn.functional.cross_entropy(logits, torch.tensor(reply)))


def _decayed(n: int) -> list[float]:
    """The recommender's per-level weights for a chain of `n` levels (deepest 1, halving up)."""
    return [ANCESTOR_DECAY ** (n - 1 - i) for i in range(n)]


def _reference(question: Question) -> str | None:
    """The first free-form or extractive reference answer (not yes/no, not unanswerable)."""
    for answer in question.answers:
        if answer.get("unanswerable") or answer.get("yes_no") is not None:
            continue
        if text := reference_text(answer):
            return text
    return None
