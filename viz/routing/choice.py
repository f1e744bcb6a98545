"""Choice: of the options that fit the memory, the budget and the latency limit, the best,
two alternatives, and the reasons, one line each.

Options are ranked the deepest matched chain first (the most specific skill), then full
precision (fp32 or bf16) before NF4, then the fastest. The alternatives are the best option in
another precision and the best shorter chain. Nothing fits: InvalidInput naming the smallest
(or cheapest, or fastest) option and what it needs.

    choice, alternatives = choose(options, request)
    why = explain(choice, alternatives, match, request, options)
"""

from __future__ import annotations

import math

from viz.errors import InvalidInput
from viz.routing.hardware import GB
from viz.routing.match import Match
from viz.routing.options import QUALITY, Option, RouteRequest

__all__ = ["choose", "explain", "rank"]


def choose(options: list[Option], request: RouteRequest) -> tuple[Option, tuple[Option, ...]]:
    """The best option that fits `request`, and up to two alternatives.

    Raises:
        InvalidInput: nothing fits (the message names the nearest option and what it needs).
    """
    ranked = sorted(_fitting(options, request), key=rank)
    choice = ranked[0]
    return choice, _alternatives(choice, ranked)


def rank(option: Option) -> tuple[float, ...]:
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
            cheapest = min(fits, key=lambda o: (o.price_micro, rank(o)))
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


def explain(
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
    lines.extend(_compared(alternative, choice) for alternative in alternatives)
    return tuple(lines)


def _compared(alternative: Option, choice: Option) -> str:
    """One line saying how `alternative` differs from `choice`."""
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
    return f"alternative: {alternative.describe()}: {', '.join(reasons) or 'ranked next'}"


def _mb(size: int) -> str:
    return f"{size / GB * 1000:,.0f} MB"
