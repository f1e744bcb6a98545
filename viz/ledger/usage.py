"""Usage: what one served request used (its usage event) and what it was charged for it.

A `Usage` names the consumer, the base, the tokens in and out, the composition of adapters (each
`AdapterUse` with the weight that scales both its LoRA delta and its royalty) and the documents
it cited. A `Settlement` is the charge and its `Line`s: who got each share and what for
(`viz.ledger.pricing` divides it, `viz.ledger.settlement` moves it). The checks here refuse what
no catalogue or ledger state could make valid, naming each limit.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction

from viz.errors import InvalidInput

__all__ = [
    "CITATIONS_MAX",
    "COMPOSITION_MAX",
    "REQUEST_ID_MAX",
    "TOKENS_MAX",
    "WEIGHT_MAX",
    "WEIGHT_MIN",
    "AdapterUse",
    "Line",
    "Settlement",
    "Usage",
    "check_request_id",
    "check_usage",
    "weight_of",
]

REQUEST_ID_MAX = 100
REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,100}")
TOKENS_MAX = 10_000_000
WEIGHT_MIN = Decimal("0.0001")
WEIGHT_MAX = Decimal(4)
COMPOSITION_MAX = 16
CITATIONS_MAX = 64


@dataclass(frozen=True)
class AdapterUse:
    """One adapter of a composition: `weight` scales both its LoRA delta and its royalty."""

    adapter: str
    version: str
    weight: str | float | int = 1


@dataclass(frozen=True)
class Usage:
    """What a served request used. `occurred_at_us` defaults to settlement time and is not
    compared on retries."""

    request_id: str
    consumer: str
    base: str
    tokens_in: int
    tokens_out: int
    composition: tuple[AdapterUse, ...] = ()
    citations: tuple[int, ...] = ()
    occurred_at_us: int | None = None
    # the operator's own price for the service (e.g. embeddings), micro-units per 1,000
    # input tokens, earned by the platform; 0 for completions, where adapters are priced
    service_price: int = 0


@dataclass(frozen=True)
class Line:
    """One share of a charge: who got it and what for."""

    account: str
    amount: int
    kind: str  # royalty | citation | escrow | fee
    adapter: str | None = None  # name@version
    adapter_version_id: int | None = None
    document_id: int | None = None


@dataclass(frozen=True)
class Settlement:
    """What one usage event was charged and who got each share; `reserved` is what its
    reservation held (0: none), `replayed` says it was the first result of an earlier call."""

    request_id: str
    charge: int
    lines: tuple[Line, ...]
    reserved: int = 0
    replayed: bool = False


# --- checks ---------------------------------------------------------------------------------


def check_usage(usage: Usage) -> None:
    """Refuse a malformed usage: its request id, token counts, composition or citations.

    Raises:
        InvalidInput: the first problem found, with the limit it breaks.
    """
    check_request_id(usage.request_id)
    if not 0 <= usage.service_price <= 10**9:
        raise InvalidInput(f"service_price {usage.service_price} must be 0..1e9 micro per 1k")
    for label, tokens in (("tokens_in", usage.tokens_in), ("tokens_out", usage.tokens_out)):
        if isinstance(tokens, bool) or not isinstance(tokens, int) or not 0 <= tokens <= TOKENS_MAX:
            raise InvalidInput(f"{label} {tokens!r} must be an integer 0..{TOKENS_MAX}")
    if len(usage.composition) > COMPOSITION_MAX:
        raise InvalidInput(f"a composition holds at most {COMPOSITION_MAX} adapters")
    labels = [(use.adapter, use.version) for use in usage.composition]
    if len(set(labels)) != len(labels):
        raise InvalidInput("a composition names the same adapter version twice; add the weights")
    for use in usage.composition:
        weight_of(use.weight)
    if len(usage.citations) > CITATIONS_MAX:
        raise InvalidInput(f"a request cites at most {CITATIONS_MAX} documents")
    if len(set(usage.citations)) != len(usage.citations):
        raise InvalidInput("list each cited document once: a citation is paid once per request")
    for document_id in usage.citations:
        if isinstance(document_id, bool) or not isinstance(document_id, int):
            raise InvalidInput(f"cited document {document_id!r} must be a document id")


def check_request_id(request_id: str) -> None:
    if not isinstance(request_id, str) or not REQUEST_ID_PATTERN.fullmatch(request_id):
        raise InvalidInput(
            f"request id {request_id!r} must be 1..{REQUEST_ID_MAX} letters, digits and . _ : -"
        )


def weight_of(weight: str | float | int) -> Fraction:
    """An adapter's weight as an exact fraction (a decimal string keeps its exact value)."""
    if isinstance(weight, bool) or not isinstance(weight, str | float | int):
        raise InvalidInput(f"weight {weight!r} must be a number such as 0.7")
    return _parse_weight(weight)


@functools.lru_cache(maxsize=1024)
def _parse_weight(weight: str | float | int) -> Fraction:
    try:
        value = Decimal(str(weight))
    except (InvalidOperation, ValueError) as error:
        raise InvalidInput(f"weight {weight!r} must be a number such as 0.7") from error
    if not value.is_finite() or not WEIGHT_MIN <= abs(value) <= WEIGHT_MAX or value < 0:
        raise InvalidInput(f"weight {weight} must be between {WEIGHT_MIN} and {WEIGHT_MAX}")
    return Fraction(value)
