"""SPDX licence expressions: validated and normalised, with suggestions for typos.

`normalise_licence("cc-by-4.0")` gives `"CC-BY-4.0"`; `normalise_licence("CC-BY-4.1")` raises
`InvalidInput` naming the closest valid ids. `LicenseRef-...` ids are accepted for custom terms.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, replace
from functools import cache

from license_expression import AND, OR, ExpressionError, Licensing, get_spdx_licensing

from viz.errors import InvalidInput

__all__ = [
    "PretrainingTerms",
    "base_licence",
    "normalise_licence",
    "pretraining_terms",
    "training_refusal",
]

LICENCE_CHARS_MAX = 500
SUGGESTIONS_MAX = 3
LICENSE_REF_PATTERN = re.compile(r"^(DocumentRef-[A-Za-z0-9.-]+:)?LicenseRef-[A-Za-z0-9.-]+$")


def normalise_licence(expression: str) -> str:
    """Validate an SPDX licence expression and return its normalised form.

    Raises:
        InvalidInput: empty, too long, malformed, or naming unknown licence ids (with the closest
            valid ids as suggestions).
    """
    expression = expression.strip()
    if not expression:
        raise InvalidInput("licence is empty; give an SPDX expression such as CC-BY-4.0 or MIT")
    if len(expression) > LICENCE_CHARS_MAX:
        raise InvalidInput(
            f"licence expression is {len(expression)} characters; the maximum is "
            f"{LICENCE_CHARS_MAX}"
        )
    licensing = _licensing()
    try:
        info = licensing.validate(expression)
        errors, invalid = list(info.errors), list(info.invalid_symbols)
    except (ExpressionError, AttributeError) as error:
        # license-expression raises on some malformed input instead of reporting it.
        raise InvalidInput(
            f"licence {expression!r} is not a valid SPDX expression ({_parse_error(expression)}); "
            "combine ids with AND / OR / WITH, e.g. 'MIT OR Apache-2.0'"
        ) from error
    unknown = [s for s in invalid if s.strip() and not LICENSE_REF_PATTERN.match(s)]
    if unknown:
        hints = "; ".join(f"{symbol!r}: did you mean {_suggest(symbol)}?" for symbol in unknown)
        raise InvalidInput(
            f"licence {expression!r} names unknown SPDX id(s): {hints} "
            "(see https://spdx.org/licenses/, or use LicenseRef-<name> for custom terms)"
        )
    if errors and any(not s.strip() for s in invalid):
        raise InvalidInput(f"licence {expression!r} is not valid: {'; '.join(errors)}")
    if info.normalized_expression is None:
        return expression
    return str(info.normalized_expression)


def training_refusal(licence: str) -> str | None:
    """Why a document under `licence` may not be trained on, or None if it may.

    An adapter is a derivative of its training text, so licences that forbid derivatives
    (Creative Commons NoDerivatives: CC-BY-ND-*, CC-BY-NC-ND-*) forbid training. Every id of
    the expression must allow it: for `A OR B` the creator can pick, so one allowing id is
    enough; for `A AND B` both must allow it.
    """
    expression = _licensing().parse(licence)
    if expression is None:
        return None
    allowed = _allows_derivatives(expression)
    return None if allowed else f"licence {licence} forbids derivative works (NoDerivatives)"


# --- pretraining a base: the text may be trained on AND the result redistributed ------------

# Licences whose text a base may be pretrained on and the base redistributed, by family. Each
# entry: (SPDX id prefix, needs attribution, share-alike). Ids are matched on their prefix up to
# the version (CC-BY-4.0 matches "CC-BY-"; "CC-BY-SA-" is tried first).
_OPEN_FAMILIES: tuple[tuple[str, bool, bool], ...] = (
    ("CC-BY-NC-SA-", True, True),  # + non-commercial (the NC rule below)
    ("CC-BY-NC-", True, False),
    ("CC-BY-SA-", True, True),
    ("CC-BY-", True, False),
    ("CC0-", False, False),
    ("PDDL-", False, False),
    ("ODC-BY-", True, False),
    ("ODBL-", True, True),
    ("GFDL-", True, True),
    ("GPL-", True, True),
    ("LGPL-", True, True),
    ("AGPL-", True, True),
    ("MPL-", True, True),
    ("APACHE-", True, False),
    ("BSD-", True, False),
)
_OPEN_IDS = {  # exact ids without a version family
    "MIT": (True, False),
    "ISC": (True, False),
    "ZLIB": (True, False),
    "UNLICENSE": (False, False),
    "0BSD": (False, False),
    "WTFPL": (False, False),
}


@dataclass(frozen=True)
class PretrainingTerms:
    """What a document's licence means for a base pretrained on it: whether it is admitted
    (with the reason if not) and which terms the base inherits."""

    licence: str
    admitted: bool
    reason: str = ""  # why it is refused
    attribution: bool = False  # the base's card must carry the document's attribution
    share_alike: bool = False  # the base's licence must carry these terms
    non_commercial: bool = False  # the base may not be used commercially
    ids: tuple[str, ...] = ()  # the SPDX ids whose terms apply


def pretraining_terms(licence: str) -> PretrainingTerms:
    """The terms under which a base may be pretrained on a document under `licence` and then
    redistributed. Admitted: public-domain dedications, attribution licences (CC-BY, MIT,
    Apache-2.0, BSD, ...), share-alike ones (their terms carried to the base's licence) and
    non-commercial ones (the base marked non-commercial). Refused: NoDerivatives, custom
    (`LicenseRef-`), proprietary or unknown terms. For `A OR B` the most permissive admitted
    choice is taken; for `A AND B` both must be admitted and their terms combine."""
    try:
        expression = _licensing().parse(licence)
    except ExpressionError as error:
        return PretrainingTerms(licence, False, f"licence {licence!r} cannot be read ({error})")
    if expression is None:
        return PretrainingTerms(licence, False, "no licence: unknown terms are not admitted")
    return replace(_terms(expression), licence=licence)


def _terms(expression: object) -> PretrainingTerms:
    if isinstance(expression, OR):
        options = [_terms(argument) for argument in expression.args]
        admitted = [t for t in options if t.admitted]
        if not admitted:
            return PretrainingTerms("", False, "; ".join(t.reason for t in options))
        return min(admitted, key=lambda t: (t.non_commercial, t.share_alike, t.attribution))
    if isinstance(expression, AND):
        parts = [_terms(argument) for argument in expression.args]
        refused = [t for t in parts if not t.admitted]
        if refused:
            return PretrainingTerms("", False, "; ".join(t.reason for t in refused))
        return PretrainingTerms(
            "",
            True,
            attribution=any(t.attribution for t in parts),
            share_alike=any(t.share_alike for t in parts),
            non_commercial=any(t.non_commercial for t in parts),
            ids=tuple(i for t in parts for i in t.ids),
        )
    key = str(getattr(expression, "key", expression))
    upper = key.upper()
    if "-ND-" in f"{upper}-":
        return PretrainingTerms("", False, f"{key} forbids derivative works (NoDerivatives)")
    if upper.startswith(("LICENSEREF-", "DOCUMENTREF-")):
        return PretrainingTerms(
            "", False, f"{key} is a custom licence: its terms cannot be checked for pretraining"
        )
    found = _OPEN_IDS.get(upper)
    if found is None:
        family = next((f for f in _OPEN_FAMILIES if upper.startswith(f[0])), None)
        found = (family[1], family[2]) if family else None
    if found is None:
        return PretrainingTerms(
            "",
            False,
            f"{key} is not an open licence Viz knows to allow training and redistribution",
        )
    attribution, share_alike = found
    non_commercial = upper.startswith("CC-BY-NC-")
    return PretrainingTerms("", True, "", attribution, share_alike, non_commercial, (key,))


def base_licence(terms: list[PretrainingTerms], *, chosen: str | None = None) -> str:
    """The licence a base pretrained on documents with `terms` (all admitted) must carry: the
    share-alike licences' terms if any (all of them, ANDed), else `chosen` (checked to keep
    non-commercial terms), else the most permissive that honours them: CC-BY-NC-4.0 when a
    document is non-commercial, CC-BY-4.0 when one needs attribution, else CC0-1.0.

    Raises:
        InvalidInput: `chosen` would drop a share-alike or non-commercial term.
    """
    share_alike = sorted({i for t in terms if t.share_alike for i in t.ids})
    non_commercial = any(t.non_commercial for t in terms)
    if share_alike:
        required = " AND ".join(share_alike)
        if chosen is not None and normalise_licence(chosen) != required:
            raise InvalidInput(
                f"the corpus has share-alike documents: the base must carry {required}, "
                f"not {chosen}"
            )
        return required
    if chosen is not None:
        chosen = normalise_licence(chosen)
        if non_commercial and not pretraining_terms(chosen).non_commercial:
            raise InvalidInput(
                f"the corpus has non-commercial documents: {chosen} would allow commercial use; "
                "choose a non-commercial licence such as CC-BY-NC-4.0"
            )
        return chosen
    if non_commercial:
        return "CC-BY-NC-4.0"
    return "CC-BY-4.0" if any(t.attribution for t in terms) else "CC0-1.0"


def _allows_derivatives(expression: object) -> bool:
    if isinstance(expression, OR):
        return any(_allows_derivatives(argument) for argument in expression.args)
    if isinstance(expression, AND):
        return all(_allows_derivatives(argument) for argument in expression.args)
    key = str(getattr(expression, "key", expression)).upper()
    return "-ND-" not in f"{key}-"


def _parse_error(expression: str) -> str:
    try:
        _licensing().parse(expression)
    except ExpressionError as error:
        return str(error)
    return "malformed expression"


def _suggest(symbol: str) -> str:
    keys = _known_keys()
    matches = difflib.get_close_matches(symbol.lower(), keys, n=SUGGESTIONS_MAX, cutoff=0.5)
    if not matches:
        return "no close SPDX id"
    return " or ".join(keys[match] for match in matches)


@cache
def _licensing() -> Licensing:
    return get_spdx_licensing()


@cache
def _known_keys() -> dict[str, str]:
    """Lower-cased SPDX id -> its canonical spelling."""
    keys: dict[str, str] = {}
    for symbol in _licensing().known_symbols.values():
        keys[symbol.key.lower()] = symbol.key
    return keys
