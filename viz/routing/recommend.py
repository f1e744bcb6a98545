"""The recommender: from a query, a machine and a budget to a base variant and an adapter chain.

    recommendation = recommend(session, settings, RouteRequest("How is BLEU computed?",
                               parse_hardware("laptop-8gb"), budget_micro=500),
                               embedder=embedder, calibration=load_calibration(home))
    recommendation.choice.model      # 'english@1.0.0:1+nlp-research@1.0.0:1+mt@1.0.0:1'

1. **Domain match.** The query's embedding is compared (cosine) with the profiles
   (`viz.routing.profiles`) of the tree's adapters, level by level from the roots. The walk goes
   down to the best child only while it is confident: its score is at least `min_score` and
   beats the runner-up by `min_margin`. A tie or a weak match stops at the more general level.
2. **Options.** Every prefix of the matched chain (base alone, + language, + domain, ...) in
   every precision (fp32, bf16, nf4) of every base with a tree, each with its memory
   (`viz.routing.cost`: weights + KV cache for `context_tokens` + the adapters' bytes), its
   speed (`viz.routing.speed`) and its price per 1,000 tokens (the chain's per-level prices
   times their weights; the platform fee comes out of that price, not on top).
3. **Choice.** Options that fit the memory, the budget and the latency limit are ranked: the
   deepest matched chain first (the most specific skill), then full precision (fp32 or bf16)
   before NF4, then the fastest. The alternatives are the best option in another precision and
   the best shorter chain.

**Per-level weights.** The deepest level of a chain gets weight 1 and each level above it half
its child's (`ANCESTOR_DECAY`): 0.25 / 0.5 / 1 for language / domain / sub-domain. Measured on
the QASPER hierarchy (60 held-out questions, reference-answer perplexity): base 191, chain at
1 / 1 / 1 273 (independently trained deltas add up and overshoot), 0.25 / 0.5 / 1 119, the
sub-domain alone 109 (`bench/results/routing/`). The weights scale the price too.
Nothing fits: InvalidInput naming the smallest (or cheapest, or fastest) option and what it
needs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from fractions import Fraction
from functools import cache
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from viz.config import Settings
from viz.errors import InvalidInput
from viz.ledger.pricing import adapter_value
from viz.models import get_base_model
from viz.models.loading import ensure_cached
from viz.models.memory import parameter_split
from viz.routing.cost import Footprint, footprint_bytes
from viz.routing.hardware import GB, Hardware
from viz.routing.hierarchy import Node, adapter_tree, level_name, walk
from viz.routing.profiles import profile_vector
from viz.routing.speed import Calibration, Speed, estimate_speed
from viz.store.schema import Account, Adapter, BaseModel

__all__ = ["Option", "Recommendation", "RouteRequest", "match_query", "recommend"]

PRECISIONS = ("fp32", "bf16", "nf4")
QUALITY = {"fp32": 1, "bf16": 1, "nf4": 0}  # NF4 loses a little; fp32 and bf16 tie on quality
LEVEL_WEIGHT = 1.0  # in the matched path; an option's chain gets its weights from its depth
ANCESTOR_DECAY = 0.5
MIN_SCORE = 0.1
MIN_MARGIN = 0.02
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
class Level:
    """One adapter of a chain, and how well it matched the query at its level."""

    name: str
    version: str
    level: str
    weight: float
    score: float
    margin: float | None  # over the runner-up at this level; None when it had no sibling

    @property
    def label(self) -> str:
        return f"{self.name}@{self.version}"


@dataclass(frozen=True)
class Match:
    """The walk down the tree: the confident path, every level's scores and why it stopped."""

    path: tuple[Level, ...]
    scores: tuple[tuple[str, tuple[tuple[str, float], ...]], ...]  # level -> (adapter, score)
    stopped: str


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


@dataclass(frozen=True)
class Recommendation:
    choice: Option
    alternatives: tuple[Option, ...]
    match: Match
    hardware: Hardware
    request: RouteRequest
    why: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {
            **self.choice.to_json(),
            "alternatives": [a.to_json() for a in self.alternatives],
            "hardware": self.hardware.describe(),
            "budget_bytes": self.hardware.budget_bytes,
            "domain": {
                "path": [level.label for level in self.match.path],
                "scores": {level: dict(scores) for level, scores in self.match.scores},
                "stopped": self.match.stopped,
            },
            "why": list(self.why),
        }


def match_query(
    query_vector: Any,
    roots: list[Node],
    vectors: dict[int, Any],
    *,
    min_score: float = MIN_SCORE,
    min_margin: float = MIN_MARGIN,
) -> Match:
    """Walk down from `roots` while confident (see the module docstring); vectors by version id."""
    path: list[Level] = []
    scores: list[tuple[str, tuple[tuple[str, float], ...]]] = []
    children = roots
    stopped = "reached a leaf"
    while children:
        ranked = sorted(
            ((float(query_vector @ vectors[n.version.id]), n) for n in children),
            key=lambda pair: -pair[0],
        )
        level = level_name(children[0].depth)
        scores.append((level, tuple((n.name, round(s, 4)) for s, n in ranked)))
        best_score, best = ranked[0]
        margin = best_score - ranked[1][0] if len(ranked) > 1 else None
        if best_score < min_score:
            stopped = (
                f"stopped above the {level} level: the best {level} adapter, {best.name}, "
                f"scores {best_score:.3f} < {min_score}"
            )
            break
        if margin is not None and margin < min_margin:
            stopped = (
                f"stopped above the {level} level: {best.name} and {ranked[1][1].name} tie "
                f"({best_score:.3f} vs {ranked[1][0]:.3f}, margin < {min_margin})"
            )
            break
        path.append(Level(best.name, best.version.version, level, LEVEL_WEIGHT, best_score, margin))
        children = best.children
    return Match(tuple(path), tuple(scores), stopped)


def recommend(
    session: Session,
    settings: Settings,
    request: RouteRequest,
    *,
    embedder: Any,
    calibration: Calibration | None,
    caller: Account | None = None,
) -> Recommendation:
    """See the module docstring.

    Raises:
        InvalidInput: a bad request, or nothing fits (the message names the nearest option).
        NotFound: an unknown base.
    """
    request.check()
    query_vector = embedder.encode([request.query])[0]
    bases = _bases(session, settings, request.base)
    best_match: Match | None = None
    options: list[Option] = []
    for base in bases:
        roots = adapter_tree(session, base.id, caller=caller)
        versions = {node.name: node.version for node in walk(roots)}
        vectors = {
            version.id: profile_vector(session, version, settings.blobs_dir, embedder)
            for version in versions.values()
        }
        match = match_query(
            query_vector, roots, vectors, min_score=request.min_score, min_margin=request.min_margin
        )
        if best_match is None or len(match.path) > len(best_match.path):
            best_match = match
        config, linear, other = _architecture(settings.models_dir, base)
        for depth in range(len(match.path) + 1):
            chain = _weighted(match.path[:depth])
            adapter_bytes = sum(versions[level.name].size_bytes for level in chain)
            price_in, price_out = _chain_price(
                [(versions[level.name], level.weight) for level in chain]
            )
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
                        base.id,
                        precision,
                        chain,
                        footprint,
                        speed,
                        price_in,
                        price_out,
                        request.reply_tokens,
                    )
                )
    assert best_match is not None
    fitting = _fitting(options, request)
    ranked = sorted(fitting, key=_rank)
    choice = ranked[0]
    alternatives = _alternatives(choice, ranked)
    return Recommendation(
        choice,
        alternatives,
        best_match,
        request.hardware,
        request,
        _why(choice, alternatives, best_match, request, options),
    )


def _weighted(chain: tuple[Level, ...]) -> tuple[Level, ...]:
    """The chain with its per-level weights: 1 for the deepest, halved at each level above."""
    last = len(chain) - 1
    return tuple(
        replace(level, weight=ANCESTOR_DECAY ** (last - i)) for i, level in enumerate(chain)
    )


def _rank(option: Option) -> tuple[float, ...]:
    return (-len(option.chain), -QUALITY[option.precision], option.speed.seconds_per_token)


def _alternatives(choice: Option, ranked: list[Option]) -> tuple[Option, ...]:
    picked: list[Option] = []
    other_precision = [
        o for o in ranked if o.chain == choice.chain and o.precision != choice.precision
    ]
    shorter = [o for o in ranked if len(o.chain) < len(choice.chain)]
    for group in (other_precision, shorter, ranked[1:]):
        for option in group:
            if option is not choice and option not in picked:
                picked.append(option)
                break
        if len(picked) == 2:
            break
    return tuple(picked)


def _fitting(options: list[Option], request: RouteRequest) -> list[Option]:
    hardware = request.hardware
    budget = hardware.budget_bytes
    fits = [o for o in options if o.footprint.total <= budget]
    if not fits:
        smallest = min(options, key=lambda o: o.footprint.total)
        need = smallest.footprint.total
        device = "GPU memory" if hardware.gpu_bytes else "RAM"
        total = hardware.gpu_bytes or hardware.ram_bytes
        share = budget / total if total else 0
        raise InvalidInput(
            f"nothing fits {hardware.describe()}: a model may use {_mb(budget)} "
            f"({share:.0%} of its {device}). The smallest option, {smallest.describe()}, needs "
            f"{_mb(need)} (weights {_mb(smallest.footprint.weights)} + KV cache for "
            f"{request.context_tokens} tokens {_mb(smallest.footprint.kv_cache)} + adapters "
            f"{_mb(smallest.footprint.adapters)}): use a machine with at least "
            f"{_mb(math.ceil(need / share) if share else need)} of {device}, or a shorter --context"
        )
    if request.budget_micro is not None:
        affordable = [o for o in fits if o.price_micro <= request.budget_micro]
        if not affordable:
            cheapest = min(fits, key=lambda o: (o.price_micro, _rank(o)))
            raise InvalidInput(
                f"nothing fits a budget of {request.budget_micro} micro-units per 1k tokens: the "
                f"cheapest option that fits the memory, {cheapest.describe()}, costs "
                f"{cheapest.price_micro}; raise --budget to at least {cheapest.price_micro}"
            )
        fits = affordable
    if request.max_latency_ms is not None:
        quick = [o for o in fits if o.latency_ms <= request.max_latency_ms]
        if not quick:
            fastest = min(fits, key=lambda o: o.latency_ms)
            raise InvalidInput(
                f"nothing answers {request.reply_tokens} tokens within {request.max_latency_ms:g} "
                f"ms on {hardware.describe()}: the fastest option that fits, "
                f"{fastest.describe()}, needs about {fastest.latency_ms:.0f} ms "
                f"({fastest.speed.tokens_per_second:.1f} tokens/s, {fastest.speed.basis}); "
                f"raise --max-latency-ms to {math.ceil(fastest.latency_ms)} or ask for fewer "
                "reply tokens"
            )
        fits = quick
    return fits


def _why(
    choice: Option,
    alternatives: tuple[Option, ...],
    match: Match,
    request: RouteRequest,
    options: list[Option],
) -> tuple[str, ...]:
    lines = []
    for level, scores in match.scores:
        shown = ", ".join(f"{name} {score:.3f}" for name, score in scores[:4])
        lines.append(f"domain, {level} level: {shown}")
    lines.append(f"domain: {match.stopped}")
    hardware = request.hardware
    if len(choice.chain) < len(match.path):
        deeper = [o for o in options if len(o.chain) == len(match.path)]
        cut = []
        if all(o.footprint.total > hardware.budget_bytes for o in deeper):
            cut.append(f"needs at least {_mb(min(o.footprint.total for o in deeper))}")
        if request.budget_micro is not None:
            cheapest = min(o.price_micro for o in deeper)
            if cheapest > request.budget_micro:
                cut.append(f"costs {cheapest} per 1k > budget {request.budget_micro}")
        if request.max_latency_ms is not None:
            quickest = min(o.latency_ms for o in deeper)
            if quickest > request.max_latency_ms:
                cut.append(f"needs ~{quickest:.0f} ms > limit {request.max_latency_ms:g} ms")
        lines.append(
            f"chain: cut to {len(choice.chain)} of the {len(match.path)} matched levels; the "
            f"whole chain {' and '.join(cut) or 'ranks lower'}"
        )
    lines.append(
        f"memory: {_mb(choice.footprint.total)} (weights {_mb(choice.footprint.weights)}, KV "
        f"cache {_mb(choice.footprint.kv_cache)} for {request.context_tokens} tokens, adapters "
        f"{_mb(choice.footprint.adapters)}) of the {_mb(hardware.budget_bytes)} a model may use "
        f"on {hardware.describe()}"
    )
    lines.append(
        f"speed: {choice.speed.tokens_per_second:.1f} tokens/s, ~{choice.latency_ms:.0f} ms for "
        f"{request.reply_tokens} tokens ({choice.speed.basis})"
        + (f"; limit {request.max_latency_ms:g} ms" if request.max_latency_ms else "")
    )
    lines.append(
        f"price: {choice.price_in_micro} in / {choice.price_out_micro} out micro-units per 1k "
        "tokens" + (f"; budget {request.budget_micro}" if request.budget_micro is not None else "")
    )
    for alternative in alternatives:
        reasons = []
        size = _mb(alternative.footprint.total)
        if alternative.footprint.total != choice.footprint.total:
            smaller = alternative.footprint.total < choice.footprint.total
            reasons.append(f"{'smaller' if smaller else 'larger'} ({size})")
        rate = f"{alternative.speed.tokens_per_second:.1f} tokens/s"
        if alternative.speed.seconds_per_token != choice.speed.seconds_per_token:
            faster = alternative.speed.seconds_per_token < choice.speed.seconds_per_token
            reasons.append(f"{'faster' if faster else 'slower'} ({rate})")
        if alternative.price_micro < choice.price_micro:
            reasons.append(f"cheaper ({alternative.price_micro} per 1k)")
        if len(alternative.chain) < len(choice.chain):
            reasons.append("less specific")
        if QUALITY[alternative.precision] < QUALITY[choice.precision]:
            reasons.append("4-bit weights")
        lines.append(
            f"alternative: {alternative.describe()}: {', '.join(reasons) or 'ranked next'}"
        )
    return tuple(lines)


def _chain_price(versions: list[tuple[Any, float]]) -> tuple[int, int]:
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


def _bases(session: Session, settings: Settings, base: str | None) -> list[BaseModel]:

    if base is not None:
        return [get_base_model(session, base)]
    ids = set(session.scalars(select(Adapter.base_id).distinct())) | {settings.default_base_model}
    return [get_base_model(session, i) for i in sorted(ids)]


def _architecture(models_dir: Path, record: BaseModel) -> tuple[Any, int, int]:
    """A base's config and parameter split (linear, other), read once per process."""
    folder = ensure_cached(record, models_dir)
    return _read_architecture(str(folder), record.weights_sha256)


@cache
def _read_architecture(folder: str, _weights_sha256: str) -> tuple[Any, int, int]:
    # deferred: transformers is heavy
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(folder)
    linear, other = parameter_split(config)
    return config, linear, other


def _mb(size: int) -> str:
    return f"{size / GB * 1000:,.0f} MB"
