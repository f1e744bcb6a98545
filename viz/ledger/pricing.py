"""Prices and the split rule: how one request's charge is divided without creating or losing
a micro-unit.

The rule, in three steps, on exact fractions (no floats anywhere):

1. Each line's exact value: an adapter applied with weight w earns
   `w x (tokens_in x price_in + tokens_out x price_out) / 1000` (prices are micro-units per
   1,000 tokens); a cited document earns its per-citation price.
2. The consumer is charged T = ceil(sum of the exact values): never more than one micro-unit
   above list price, and splitting a request into tiny ones cannot make it free.
3. T is divided: the platform's exact share is T x fee; each line's exact share is its value
   scaled to T, times (1 - fee). Every share is rounded down, and the micro-units left over
   (fewer than the number of shares) go one each to the largest fractional remainders, ties to
   the earlier line (composition order, then citations, then the platform). The shares add up
   to exactly T, and each is within one micro-unit of its exact value.

An adapter version with royalty shares (`viz.ledger.shares`) enters step 1 as several lines:
its exact value times each contributor's share, and the rest for its owner (`share_values`).
Their sum is the version's value, so the charge does not change; only step 3 divides it finer.
"""

from __future__ import annotations

import math
from fractions import Fraction

__all__ = ["BPS", "adapter_value", "charge_for", "share_values", "split"]

BPS = 10_000  # basis points in one


def adapter_value(
    weight: Fraction, tokens_in: int, tokens_out: int, price_in: int, price_out: int
) -> Fraction:
    """The exact micro-units an adapter applied with `weight` earns for these tokens."""
    return weight * Fraction(tokens_in * price_in + tokens_out * price_out, 1000)


def share_values(value: Fraction, shares_bps: list[int]) -> tuple[Fraction, list[Fraction]]:
    """Divide the exact `value` into (the owner's remainder, one part per share), exactly.

    >>> share_values(Fraction(700), [3000, 2000])
    (Fraction(350, 1), [Fraction(210, 1), Fraction(140, 1)])
    """
    assert sum(shares_bps) <= BPS, "shares are checked when they are set"
    parts = [value * Fraction(bps, BPS) for bps in shares_bps]
    return value - sum(parts, Fraction(0)), parts


def charge_for(values: list[Fraction]) -> int:
    """What the consumer pays for lines worth `values`: their sum rounded up."""
    return math.ceil(sum(values, Fraction(0)))


def split(values: list[Fraction], fee_bps: int) -> tuple[int, list[int], int]:
    """Divide the charge for `values` into (charge, one amount per value, platform fee).

    Exact arithmetic on integers: every value is written over one common denominator, so each
    share is an integer numerator over `total x BPS` and rounding is integer division.

    >>> split([Fraction(10, 3), Fraction(20, 3)], fee_bps=1000)
    (10, [3, 6], 1)
    """
    assert 0 <= fee_bps <= BPS, "the fee is checked when settings are read"
    assert all(value >= 0 for value in values), "line values are never negative"
    denominator = math.lcm(*(value.denominator for value in values)) if values else 1
    numerators = [value.numerator * (denominator // value.denominator) for value in values]
    total = sum(numerators)
    charge = -(-total // denominator)  # ceil(total / denominator)
    if charge == 0:
        return 0, [0] * len(values), 0
    # share_i = value_i / sum x charge x (1 - fee)
    #         = numerator_i x charge x (BPS - fee) / (total x BPS)
    scale = total * BPS
    exact = [numerator * charge * (BPS - fee_bps) for numerator in numerators]
    exact.append(charge * fee_bps * total)
    amounts = [share // scale for share in exact]
    left = charge - sum(amounts)
    assert 0 <= left < len(exact), "rounding down loses less than one unit per share"
    if left:
        by_remainder = sorted(range(len(exact)), key=lambda i: (-(exact[i] % scale), i))
        for index in by_remainder[:left]:
            amounts[index] += 1
    return charge, amounts[:-1], amounts[-1]
