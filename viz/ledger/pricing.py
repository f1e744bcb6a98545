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

The price lookup (`Catalogue`, `price`) reads what the rule needs from the catalogue, once per
batch of usage events: each adapter version's prices, status, owner and shares, each cited
document's owner and price per citation. `price` turns one `Usage` into its charge and lines.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from fractions import Fraction

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from viz.errors import InvalidInput, NotFound
from viz.ledger.accounts import ESCROW, PLATFORM, creator_code
from viz.ledger.shares import BPS, shares_by_version
from viz.ledger.usage import AdapterUse, Line, Usage, weight_of
from viz.store.schema import Account, Adapter, AdapterVersion, Document, DocumentListing

__all__ = [
    "BPS",
    "Catalogue",
    "Priced",
    "adapter_value",
    "charge_for",
    "price",
    "share_values",
    "split",
]


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


# --- the price lookup: the catalogue, read once per batch -----------------------------------


@dataclass(frozen=True)
class Priced:
    """A usage's charge and its lines, amounts set (they add up to the charge)."""

    charge: int
    lines: tuple[Line, ...]


@dataclass(frozen=True)
class _VersionPrice:
    id: int
    status: str
    price_in_micro: int
    price_out_micro: int
    owner: str
    base: str
    shares: tuple[tuple[str, int], ...] = ()  # (contributor, share_bps); the owner keeps the rest


# Built once (pricing runs for every request: constructing a statement costs more than running
# it); `names` expands to the list given.
_CONSUMERS = select(Account.name, Account.id).where(
    Account.name.in_(bindparam("names", expanding=True))
)
_VERSIONS = (
    select(
        AdapterVersion.id,
        AdapterVersion.version,
        AdapterVersion.status,
        AdapterVersion.price_in_micro,
        AdapterVersion.price_out_micro,
        Adapter.name,
        Account.name,
        Adapter.base_id,
    )
    .join(Adapter, AdapterVersion.adapter_id == Adapter.id)
    .join(Account, Adapter.owner_id == Account.id)
    .where(Adapter.name.in_(bindparam("names", expanding=True)))
)


@dataclass
class Catalogue:
    """What pricing needs, loaded once per batch."""

    consumers: dict[str, int]  # name -> account id
    versions: dict[tuple[str, str], _VersionPrice]
    documents: dict[int, tuple[str, int]]  # -> owner name, price per citation

    @classmethod
    def load(cls, session: Session, usages: Sequence[Usage]) -> Catalogue:
        names = sorted({u.consumer for u in usages})
        consumers = dict(session.execute(_CONSUMERS, {"names": names}).all())
        wanted = {(use.adapter, use.version) for u in usages for use in u.composition}
        versions = {}
        adapter_names = sorted({name for name, _ in wanted})
        if adapter_names:
            rows = session.execute(_VERSIONS, {"names": adapter_names})
            for id_, version, status, price_in, price_out, name, owner, base in rows:
                if (name, version) in wanted:
                    versions[(name, version)] = _VersionPrice(
                        id_, status, price_in, price_out, owner, base
                    )
            shares = shares_by_version(session, [v.id for v in versions.values()])
            for key, found in versions.items():
                if found.id in shares:
                    versions[key] = replace(found, shares=shares[found.id])
        document_ids = sorted({d for u in usages for d in u.citations})
        documents = {}
        if document_ids:
            listed = session.execute(
                select(Document.id, Account.name, DocumentListing.price_per_citation_micro)
                .join(Account, Document.owner_id == Account.id)
                .outerjoin(DocumentListing, DocumentListing.document_id == Document.id)
                .where(Document.id.in_(document_ids))
            )
            documents = {id_: (owner, price or 0) for id_, owner, price in listed}
        return cls(consumers, versions, documents)


def price(usage: Usage, catalogue: Catalogue, fee_bps: int) -> Priced:
    """The charge for `usage` and its lines (royalties, citations, escrow, the platform's fee).

    Raises:
        NotFound: an unknown consumer, adapter version or document.
        InvalidInput: a version of another base, or one not approved (nor taken down).
    """
    if usage.consumer not in catalogue.consumers:
        raise NotFound(f"no account named {usage.consumer!r}; create it with: viz account create")
    values: list[Fraction] = []
    recipients: list[Line] = []
    for use in usage.composition:
        for value, line in _adapter_lines(usage, use, catalogue):
            values.append(value)
            recipients.append(line)
    for document_id in usage.citations:
        if document_id not in catalogue.documents:
            raise NotFound(f"no document {document_id} to cite")
        owner, price = catalogue.documents[document_id]
        values.append(Fraction(price))
        recipients.append(
            Line(account=creator_code(owner), amount=0, kind="citation", document_id=document_id)
        )
    if usage.service_price:  # the operator's own service (embeddings): the platform earns it
        values.append(Fraction(usage.tokens_in * usage.service_price, 1000))
        recipients.append(Line(account=PLATFORM, amount=0, kind="service"))
    charge, amounts, fee = split(values, fee_bps)
    lines = [replace(line, amount=amount) for line, amount in zip(recipients, amounts, strict=True)]
    lines.append(Line(account=PLATFORM, amount=fee, kind="fee"))
    return Priced(charge, tuple(lines))


def _adapter_lines(
    usage: Usage, use: AdapterUse, catalogue: Catalogue
) -> list[tuple[Fraction, Line]]:
    """The exact values one adapter of the composition earns, and who earns each: its owner,
    or escrow while it is taken down, or its owner and contributors when it has shares."""
    label = f"{use.adapter}@{use.version}"
    version = catalogue.versions.get((use.adapter, use.version))
    if version is None:
        raise NotFound(f"no adapter version {label} in the catalogue")
    if version.base != usage.base:
        raise InvalidInput(f"{label} adapts base {version.base!r}, not {usage.base!r}")
    if version.status not in ("approved", "taken_down"):
        raise InvalidInput(f"{label} is {version.status}; only approved adapters are served")
    value = adapter_value(
        weight_of(use.weight),
        usage.tokens_in,
        usage.tokens_out,
        version.price_in_micro,
        version.price_out_micro,
    )
    line = Line(
        account=creator_code(version.owner),
        amount=0,
        kind="royalty",
        adapter=label,
        adapter_version_id=version.id,
    )
    if version.status == "taken_down":
        return [(value, replace(line, account=ESCROW, kind="escrow"))]
    if not version.shares:
        return [(value, line)]
    owner_value, parts = share_values(value, [bps for _, bps in version.shares])
    owner_bps = BPS - sum(bps for _, bps in version.shares)
    lines = [(owner_value, line)] if owner_bps else []
    for (contributor, _), part in zip(version.shares, parts, strict=True):
        lines.append((part, replace(line, account=creator_code(contributor))))
    return lines
