"""Routing: which base variant and adapter chain serve a query on a machine within a budget.

`hierarchy` builds the tree of adapters over a base (language -> domain -> sub-domain),
`profiles` the domain profile each adapter is matched by, `hardware` and `cost` a machine's
memory and a variant's footprint, `speed` its seconds per token (calibrated per machine). The
recommender walks the tree (`match`), lists every chain prefix in every precision (`options`),
picks one with two alternatives and says why (`choice`); `recommend` runs the three.
"""

from viz.routing.choice import choose, explain
from viz.routing.cost import Footprint, footprint_bytes, kv_cache_bytes
from viz.routing.hardware import PRESETS, Hardware, detect_hardware, parse_hardware, parse_size
from viz.routing.hierarchy import LEVELS, Node, adapter_tree, level_name, render_tree, walk
from viz.routing.match import Level, Match, match_query
from viz.routing.options import ANCESTOR_DECAY, Option, RouteRequest, chain_options
from viz.routing.profiles import build_profile, card_text, profile_vector
from viz.routing.recommend import Recommendation, recommend
from viz.routing.speed import (
    Calibration,
    Speed,
    calibration_path,
    estimate_speed,
    load_calibration,
    machine_id,
)

__all__ = [
    "ANCESTOR_DECAY",
    "LEVELS",
    "PRESETS",
    "Calibration",
    "Footprint",
    "Hardware",
    "Level",
    "Match",
    "Node",
    "Option",
    "Recommendation",
    "RouteRequest",
    "Speed",
    "adapter_tree",
    "build_profile",
    "calibration_path",
    "card_text",
    "chain_options",
    "choose",
    "detect_hardware",
    "estimate_speed",
    "explain",
    "footprint_bytes",
    "kv_cache_bytes",
    "level_name",
    "load_calibration",
    "machine_id",
    "match_query",
    "parse_hardware",
    "parse_size",
    "profile_vector",
    "recommend",
    "render_tree",
    "walk",
]
