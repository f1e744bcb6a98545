"""Marketplace: the catalogue (publish, search, versions, takedowns: `catalogue`), the hierarchy's
rules written once (`hierarchy`: one parent walk and its depth limit, semver order, newest
approved, visible to caller, manifests), upload screening (`screening`; its canary stage in
`canary`) and merges (`merge`).

Licence rules live in the leaf module `viz.licences`. The package exports the hierarchy's rules;
import the catalogue, screening and merges from their modules.
"""

from viz.market.hierarchy import (
    PARENT_DEPTH_MAX,
    ancestors,
    manifest_of,
    newest_approved,
    semver_key,
    visible_to,
    walk_parents,
)

__all__ = [
    "PARENT_DEPTH_MAX",
    "ancestors",
    "manifest_of",
    "newest_approved",
    "semver_key",
    "visible_to",
    "walk_parents",
]
