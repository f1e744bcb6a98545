"""Domain match: the walk down the adapter tree that picks the chain a query needs.

The query's embedding is compared (cosine) with the profiles (`viz.routing.profiles`) of the
tree's adapters, level by level from the roots. The walk goes down to the best child only while
it is confident: its score is at least `min_score` and beats the runner-up by `min_margin`. A
tie or a weak match stops at the more general level.

    match = match_query(query_vector, roots, vectors)   # vectors: profile by version id
    [level.name for level in match.path]                 # ['english', 'nlp-research', 'mt']
    match.stopped                                        # 'reached a leaf'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from viz.routing.hierarchy import Node, level_name

__all__ = ["LEVEL_WEIGHT", "MIN_MARGIN", "MIN_SCORE", "Level", "Match", "match_query"]

LEVEL_WEIGHT = 1.0  # in the matched path; an option's chain gets its weights from its depth
MIN_SCORE = 0.1
MIN_MARGIN = 0.02


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
