"""Options: what a route request asks for, and every way to answer it.

Every prefix of the matched chain (base alone, + language, + domain, ...) in every precision
(fp32, bf16, nf4) of every base with a tree is an option, each with its memory
(`viz.routing.cost`: weights + KV cache for `context_tokens` + the adapters' bytes), its speed
(`viz.routing.speed`) and its price per 1,000 tokens (the chain's per-level prices times their
weights; the platform fee comes out of that price, not on top).

**Per-level weights.** The deepest level of a chain gets weight 1 and each level above it half
its child's (`ANCESTOR_DECAY`): 0.25 / 0.5 / 1 for language / domain / sub-domain. Measured on
the QASPER hierarchy (60 held-out questions, reference-answer perplexity): base 191, chain at
1 / 1 / 1 273 (independently trained deltas add up and overshoot), 0.25 / 0.5 / 1 119, the
sub-domain alone 109 (`bench/results/routing/`). The weights scale the price too.

    options = chain_options(base.id, architecture(models_dir, base), match.path, versions,
                            request, calibration)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from fractions import Fraction
from functools import cache
from pathlib import Path
from typing import Any

from viz.errors import InvalidInput
from viz.ledger.pricing import adapter_value
from viz.models.loading import ensure_cached
from viz.models.memory import parameter_split
from viz.routing.cost import Footprint, footprint_bytes
from viz.routing.hardware import Hardware
from viz.routing.match import MIN_MARGIN, MIN_SCORE, Level
from viz.routing.speed import Calibration, Speed, estimate_speed
from viz.store.schema import AdapterVersion, BaseModel

__all__ = [
    "ANCESTOR_DECAY",
    "PRECISIONS",
    "QUALITY",
    "QUERY_CHARS_MAX",
    "Option",
    "RouteRequest",
    "architecture",
    "chain_options",
    "chain_price",
    "weighted",
]

PRECISIONS = ("fp32", "bf16", "nf4")
QUALITY = {"fp32": 1, "bf16": 1, "nf4": 0}  # NF4 loses a little; fp32 and bf16 tie on quality
ANCESTOR_DECAY = 0.5
QUERY_CHARS_MAX = 4000
CONTEXT_DEFAULT = 2048
REPLY_TOKENS_DEFAULT = 128


@dataclass(frozen=True)
class RouteRequest:
    query: str
    hardware: Hardware
    budget_micro: int | None = None  # most micro-units per 1,000 tokens (in or out)
    max_latency_ms: float | None = None  # for a reply of `reply_tokens` tokens
    context_tokens: int = CONTEXT_DEFAULT
    reply_tokens: int = REPLY_TOKENS_DEFAULT
    base: str | None = None
    min_score: float = MIN_SCORE
    min_margin: float = MIN_MARGIN

    def check(self) -> None:
        problems = []
        if not self.query.strip():
            problems.append("the query is empty; describe the task, e.g. 'translate a contract'")
        if len(self.query) > QUERY_CHARS_MAX:
            problems.append(
                f"the query has {len(self.query)} characters; at most {QUERY_CHARS_MAX}"
            )
        if self.budget_micro is not None and self.budget_micro < 0:
            problems.append(f"budget {self.budget_micro} must be >= 0 micro-units per 1k tokens")
        if self.max_latency_ms is not None and not self.max_latency_ms > 0:
            problems.append(f"max latency {self.max_latency_ms} ms must be > 0")
        if not 1 <= self.reply_tokens <= 100_000:
            problems.append(f"reply tokens {self.reply_tokens} must be 1..100000")
        if problems:
            raise InvalidInput("; ".join(problems))


@dataclass(frozen=True)
class Option:
    base_id: str
    precision: str
    chain: tuple[Level, ...]
    footprint: Footprint
    speed: Speed
    price_in_micro: int  # per 1,000 tokens
    price_out_micro: int
    reply_tokens: int

    @property
    def model(self) -> str:
        """The `model` string that runs this option (what the API returns)."""
        if not self.chain:
            return self.base_id
        return "+".join(f"{level.label}:{level.weight:g}" for level in self.chain)

    @property
    def latency_ms(self) -> float:
        return self.speed.seconds_per_token * self.reply_tokens * 1000

    @property
    def price_micro(self) -> int:
        return max(self.price_in_micro, self.price_out_micro)

    def describe(self) -> str:
        chain = " -> ".join(level.name for level in self.chain) or "no adapters"
        return f"{self.base_id} {self.precision} + {chain}"

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "base": self.base_id,
            "precision": self.precision,
            "chain": [
                {
                    "adapter": level.label,
                    "level": level.level,
                    "weight": level.weight,
                    "score": round(level.score, 4),
                }
                for level in self.chain
            ],
            "memory_bytes": {
                "weights": self.footprint.weights,
                "kv_cache": self.footprint.kv_cache,
                "adapters": self.footprint.adapters,
                "total": self.footprint.total,
            },
            "tokens_per_second": round(self.speed.tokens_per_second, 2),
            "latency_ms": round(self.latency_ms, 1),
            "speed_basis": self.speed.basis,
            "price_micro_per_1k": {"in": self.price_in_micro, "out": self.price_out_micro},
        }


def chain_options(
    base_id: str,
    architecture: tuple[Any, int, int],
    path: tuple[Level, ...],
    versions: dict[str, AdapterVersion],
    request: RouteRequest,
    calibration: Calibration | None,
) -> list[Option]:
    """One base's options: every prefix of the matched `path` in every precision.

    Args:
        architecture: the base's config and parameter split (linear, other), see `architecture`.
        versions: the adapter versions of the base's tree, by adapter name.
    """
    config, linear, other = architecture
    options = []
    for depth in range(len(path) + 1):
        chain = weighted(path[:depth])
        adapter_bytes = sum(versions[level.name].size_bytes for level in chain)
        price_in, price_out = chain_price([(versions[level.name], level.weight) for level in chain])
        for precision in PRECISIONS:
            footprint = footprint_bytes(
                config,
                linear,
                other,
                precision,
                context_tokens=request.context_tokens,
                adapter_bytes=adapter_bytes,
            )
            speed = estimate_speed(
                request.hardware, precision, footprint.weights, len(chain), calibration
            )
            options.append(
                Option(
                    base_id,
                    precision,
                    chain,
                    footprint,
                    speed,
                    price_in,
                    price_out,
                    request.reply_tokens,
                )
            )
    return options


def weighted(chain: tuple[Level, ...]) -> tuple[Level, ...]:
    """The chain with its per-level weights: 1 for the deepest, halved at each level above."""
    last = len(chain) - 1
    return tuple(
        replace(level, weight=ANCESTOR_DECAY ** (last - i)) for i, level in enumerate(chain)
    )


def chain_price(versions: list[tuple[Any, float]]) -> tuple[int, int]:
    """Micro-units for 1,000 tokens in and for 1,000 out, each rounded up as a charge is."""
    price_in = sum(
        (adapter_value(Fraction(w), 1000, 0, v.price_in_micro, 0) for v, w in versions),
        Fraction(0),
    )
    price_out = sum(
        (adapter_value(Fraction(w), 0, 1000, 0, v.price_out_micro) for v, w in versions),
        Fraction(0),
    )
    return math.ceil(price_in), math.ceil(price_out)


def architecture(models_dir: Path, record: BaseModel) -> tuple[Any, int, int]:
    """A base's config and parameter split (linear, other), read once per process."""
    folder = ensure_cached(record, models_dir)
    return _read_architecture(str(folder), record.weights_sha256)


@cache
def _read_architecture(folder: str, _weights_sha256: str) -> tuple[Any, int, int]:
    from transformers import AutoConfig  # deferred: transformers is heavy

    config = AutoConfig.from_pretrained(folder)
    linear, other = parameter_split(config)
    return config, linear, other
