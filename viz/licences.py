"""SPDX licence expressions: validated and normalised, with suggestions for typos.

`normalise_licence("cc-by-4.0")` gives `"CC-BY-4.0"`; `normalise_licence("CC-BY-4.1")` raises
`InvalidInput` naming the closest valid ids. `LicenseRef-...` ids are accepted for custom terms.
"""

from __future__ import annotations

import difflib
import re
from functools import cache

from license_expression import AND, OR, ExpressionError, Licensing, get_spdx_licensing

from viz.errors import InvalidInput

__all__ = ["normalise_licence", "training_refusal"]

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
