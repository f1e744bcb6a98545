"""The recommender as a server or the CLI calls it: with this process's cached embedder and
this machine's cached speed calibration."""

from __future__ import annotations

from typing import Any

from viz.config import Settings
from viz.rag.cache import load_embedder_cached
from viz.routing.options import RouteRequest
from viz.routing.recommend import Recommendation, recommend
from viz.routing.speed import load_calibration

__all__ = ["recommend_route"]


def recommend_route(
    session: Any, settings: Settings, request: RouteRequest, *, caller: Any = None
) -> Recommendation:
    """The recommender with this process's embedder and this machine's cached calibration."""
    return recommend(
        session,
        request,
        embedder=load_embedder_cached(),
        calibration=load_calibration(settings.home),
        blobs_dir=settings.blobs_dir,
        models_dir=settings.models_dir,
        default_base=settings.default_base_model,
        caller=caller,
    )
