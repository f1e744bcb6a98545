"""Citation parsing: which numbered sources an answer cites, and whether it says the sources
do not answer. Grounded answers (`viz.rag.answer.cite`) use it to decide which documents get
paid for a citation; the evaluation (`viz.eval.metrics`) scores with the same rules.

    parse_citations("BERT [2], as in [1][2].", n_sources=5)   # [2, 1]
    says_cannot_find("I can't find this in the sources.")     # True
"""

import re

__all__ = ["CANNOT_FIND_PHRASES", "parse_citations", "says_cannot_find"]

CANNOT_FIND_PHRASES: tuple[str, ...] = (
    "can't find",
    "cannot find",
    "can not find",
    "could not find",
    "couldn't find",
    "not in the sources",
    "not in the provided sources",
    "unanswerable",
)
"""Lower-case phrases that mark a prediction as "the sources do not answer this"."""

# "[1]", "[1, 2]", "[1,2]"; "[1][3]" is two matches of the same pattern.
_CITATION = re.compile(r"\[\s*(\d+(?:\s*,\s*\d+)*)\s*\]")


def says_cannot_find(prediction: str) -> bool:
    """True if the prediction contains one of `CANNOT_FIND_PHRASES` (case-insensitive)."""
    text = prediction.lower().replace("\u2019", "'")
    return any(phrase in text for phrase in CANNOT_FIND_PHRASES)


def parse_citations(answer: str, n_sources: int) -> list[int]:
    """Distinct source numbers cited as "[n]", "[n, m]" or "[n][m]", in order of first
    appearance, keeping only 1..n_sources (a model citing "[7]" of 5 sources cited nothing)."""
    cited: list[int] = []
    for match in _CITATION.finditer(answer):
        for part in match.group(1).split(","):
            number = int(part)
            if 1 <= number <= n_sources and number not in cited:
                cited.append(number)
    return cited
