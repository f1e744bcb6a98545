"""The recommender: from a query, a machine and a budget to a base variant and an adapter chain.

    recommendation = recommend(session, RouteRequest("How is BLEU computed?",
                               parse_hardware("laptop-8gb"), budget_micro=500),
                               embedder=embedder, calibration=load_calibration(home),
                               blobs_dir=settings.blobs_dir, models_dir=settings.models_dir,
                               default_base=settings.default_base_model)
    recommendation.choice.model      # 'english@1.0.0:1+nlp-research@1.0.0:1+mt@1.0.0:1'

1. **Domain match** (`viz.routing.match`): the walk down each base's adapter tree, level by
   level, while the query's best match is confident.
2. **Options** (`viz.routing.options`): every prefix of the matched chain in every precision of
   every base with a tree, with its memory, speed and price per 1,000 tokens.
3. **Choice** (`viz.routing.choice`): of the options that fit the memory, the budget and the
   latency limit, the deepest chain, then full precision, then the fastest; two alternatives,
   and the reasons.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from viz.models import get_base_model
from viz.routing.choice import choose, explain
from viz.routing.hardware import Hardware
from viz.routing.hierarchy import adapter_tree, walk
from viz.routing.match import Match, match_query
from viz.routing.options import Option, RouteRequest, architecture, chain_options
from viz.routing.profiles import profile_vector
from viz.routing.speed import Calibration
from viz.store.schema import Account, Adapter, BaseModel

__all__ = ["Recommendation", "recommend"]


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


def recommend(
    session: Session,
    request: RouteRequest,
    *,
    embedder: Any,
    calibration: Calibration | None,
    blobs_dir: Path,
    models_dir: Path,
    default_base: str,
    caller: Account | None = None,
) -> Recommendation:
    """See the module docstring. Bases are `request.base`, or every base with adapters and
    `default_base`; profiles are read from `blobs_dir`, base configs from `models_dir`.

    Raises:
        InvalidInput: a bad request, or nothing fits (the message names the nearest option).
        NotFound: an unknown base.
    """
    request.check()
    query_vector = embedder.encode([request.query])[0]
    best_match: Match | None = None
    options: list[Option] = []
    for base in _bases(session, request.base, default_base):
        roots = adapter_tree(session, base.id, caller=caller)
        versions = {node.name: node.version for node in walk(roots)}
        vectors = {
            version.id: profile_vector(session, version, blobs_dir, embedder)
            for version in versions.values()
        }
        match = match_query(
            query_vector, roots, vectors, min_score=request.min_score, min_margin=request.min_margin
        )
        if best_match is None or len(match.path) > len(best_match.path):
            best_match = match
        options += chain_options(
            base.id, architecture(models_dir, base), match.path, versions, request, calibration
        )
    assert best_match is not None
    choice, alternatives = choose(options, request)
    return Recommendation(
        choice,
        alternatives,
        best_match,
        request.hardware,
        request,
        explain(choice, alternatives, best_match, request, options),
    )


def _bases(session: Session, base: str | None, default_base: str) -> list[BaseModel]:
    if base is not None:
        return [get_base_model(session, base)]
    ids = set(session.scalars(select(Adapter.base_id).distinct())) | {default_base}
    return [get_base_model(session, i) for i in sorted(ids)]
