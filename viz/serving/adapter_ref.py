"""What a request names in `model`: a base, an adapter, or a weighted composition.

Grammar (whitespace is not allowed):

    model       := "auto" | base-id | composition
    composition := term ( "+" term )*
    term        := adapter-name [ "@" version ] [ ":" weight ]

`qasper-nlp` is the newest approved version at weight 1; `qasper-nlp@1.0.0:0.7+mt:0.5` applies two
adapters with weights 0.7 and 0.5 to every token, without merging them. A bare name that is a
registered base id means that base alone. `auto` asks the recommender (`viz.routing.recommend`)
to choose the base precision and the adapter chain for the request.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

from viz.errors import InvalidInput
from viz.ledger.usage import WEIGHT_MAX, WEIGHT_MIN

__all__ = ["ModelRef", "Term", "parse_model"]

TERMS_MAX = 8
_TERM = re.compile(
    r"(?P<name>[a-z0-9][a-z0-9_.-]{0,63})(?:@(?P<version>[A-Za-z0-9.-]{1,64}))?"
    r"(?::(?P<weight>[0-9]*\.?[0-9]+))?"
)


@dataclass(frozen=True)
class Term:
    name: str
    version: str | None = None
    weight: float = 1.0
    weight_given: bool = False


@dataclass(frozen=True)
class ModelRef:
    text: str
    terms: tuple[Term, ...]

    @property
    def auto(self) -> bool:
        return self.text == "auto"

    @property
    def single_name(self) -> str | None:
        """The name when `model` is one bare word (a base id or an adapter at weight 1)."""
        if (
            len(self.terms) == 1
            and self.terms[0].version is None
            and not self.terms[0].weight_given
        ):
            return self.terms[0].name
        return None


def parse_model(text: str) -> ModelRef:
    """Parse `model` (see the module docstring).

    Raises:
        InvalidInput: an empty or malformed name, a bad weight, too many terms.
    """
    if text == "auto":
        return ModelRef(text, ())
    if not text or not isinstance(text, str):
        raise InvalidInput("model is empty; name a base id, an adapter or a composition")
    parts = text.split("+")
    if len(parts) > TERMS_MAX:
        raise InvalidInput(f"a composition holds at most {TERMS_MAX} adapters, got {len(parts)}")
    terms = []
    for part in parts:
        match = _TERM.fullmatch(part)
        if match is None:
            raise InvalidInput(
                f"cannot read {part!r} in model {text!r}; write name[@version][:weight] terms "
                "joined by '+', e.g. 'qasper-nlp@1.0.0:0.7+mt:0.5'"
            )
        weight = float(match["weight"]) if match["weight"] else 1.0
        if match["weight"] and not WEIGHT_MIN <= Decimal(match["weight"]) <= WEIGHT_MAX:
            raise InvalidInput(  # the bounds metering prices by, so what runs can be charged
                f"weight {match['weight']} of {match['name']} must be {WEIGHT_MIN}..{WEIGHT_MAX}"
            )
        terms.append(Term(match["name"], match["version"], weight, match["weight"] is not None))
    names = [(t.name, t.version) for t in terms]
    if len(set(names)) != len(names):
        raise InvalidInput(f"model {text!r} names the same adapter twice; add the weights instead")
    return ModelRef(text, tuple(terms))
