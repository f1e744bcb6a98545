"""The hierarchy's rules, written once: every caller (catalogue, merges, routing, serving, the
pages, the CLI) asks here.

- **Depth**: an adapter has at most `PARENT_DEPTH_MAX` ancestors. Serving applies the whole
  chain, so publishing refuses a deeper one (`check_parent_chain`).
- **One parent walk**: `walk_parents(start, parent_of)` gives the ancestors nearest first, over
  catalogue rows (`ancestors(adapter)`) or a name -> parent-name map alike; it refuses a loop and a
  chain over the limit, or (`strict=False`, for display) stops at them.
- **Versions**: `semver_key` orders versions by semver precedence; `newest_approved` is the
  version a name without `@version` means.
- **Visibility**: a private adapter is visible only to its creator (`visible_to` for a row,
  `visible_clause` for a query).
- **Manifests**: `manifest_of` parses a version's `manifest_json` (a damaged one reads as empty);
  `manifest_precision` and `training_document_hashes` read the fields callers use.

    chain = ancestors(adapter)                # [parent, grandparent, ...], at most the limit
    version = newest_approved(adapter)                          # None if nothing is approved
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.orm import Session

from viz.errors import Conflict, InvalidInput
from viz.store.schema import Account, Adapter, AdapterVersion

__all__ = [
    "PARENT_DEPTH_MAX",
    "PRECISIONS",
    "SEMVER",
    "USABLE",
    "ancestors",
    "check_parent_chain",
    "manifest_of",
    "manifest_precision",
    "newest",
    "newest_approved",
    "semver_key",
    "training_document_hashes",
    "visible_clause",
    "visible_to",
    "walk_parents",
]

PARENT_DEPTH_MAX = 8
"""The most ancestors an adapter may have: serving applies the whole chain with the child."""
SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?$")
USABLE = ("approved",)
"""Version statuses that are served, listed and searched."""
PRECISIONS = ("fp32", "bf16", "nf4")

T = TypeVar("T")


def walk_parents(
    start: T,
    parent_of: Callable[[T], T | None],
    *,
    limit: int | None = PARENT_DEPTH_MAX,
    strict: bool = True,
) -> list[T]:
    """The ancestors of `start`, nearest first (its parent, its grandparent, ... a root).

    `limit` is the most ancestors allowed (None: no limit, a loop still ends the walk).

    Raises (only when `strict`; otherwise the walk stops there):
        Conflict: the chain loops back on itself.
        InvalidInput: more than `limit` ancestors, naming the depth reached and the limit.
    """
    chain: list[T] = []
    current = parent_of(start)
    while current is not None:
        if current == start or current in chain:
            if strict:
                raise Conflict(f"the parent chain of {_name(start)} loops at {_name(current)}")
            break
        if limit is not None and len(chain) >= limit:
            if strict:
                raise InvalidInput(
                    f"{_name(start)} has more than {limit} ancestors; serving applies at "
                    f"most {limit}"
                )
            break
        chain.append(current)
        current = parent_of(current)
    return chain


def ancestors(adapter: Adapter, *, strict: bool = True) -> list[Adapter]:
    """`walk_parents` over catalogue rows: the adapter's parent, grandparent, ... a root."""
    return walk_parents(adapter, _parent_of, strict=strict)


def check_parent_chain(
    session: Session, adapter: Adapter | None, name: str, parent: Adapter
) -> None:
    """Refuse making `parent` the parent of `name` (`adapter`, None while it is new) when that
    closes a loop or gives it, or any adapter below it, more than `PARENT_DEPTH_MAX` ancestors.

    Raises:
        Conflict: the new parent is `adapter` itself or one of its descendants.
        InvalidInput: the chain would be deeper than serving accepts (names depth and limit).
    """
    chain = [parent, *walk_parents(parent, _parent_of, limit=None, strict=False)]
    if adapter is not None and adapter in chain:
        raise Conflict(
            f"making {parent.name!r} the parent of {adapter.name!r} would make "
            "a cycle in the hierarchy"
        )
    below = _height_below(session, adapter) if adapter is not None else 0
    depth = len(chain) + below
    if depth > PARENT_DEPTH_MAX:
        under = f" (and {below} level(s) of adapters below it)" if below else ""
        raise InvalidInput(
            f"parent {parent.name!r} would give {name!r}{under} a chain of {depth} ancestors "
            f"({' -> '.join(a.name for a in chain)}); serving applies at most "
            f"{PARENT_DEPTH_MAX}, so choose a parent higher in the hierarchy"
        )


def semver_key(version: AdapterVersion) -> tuple[int, int, int, int, str]:
    """Sort key for versions by semver precedence (a pre-release sorts before its release)."""
    match = SEMVER.match(version.version)
    assert match is not None, version.version
    major, minor, patch, pre = match.groups()
    return int(major), int(minor), int(patch), 0 if pre else 1, pre or ""


def newest(versions: Iterable[AdapterVersion]) -> AdapterVersion | None:
    """The highest version by semver precedence, or None for none."""
    return max(versions, key=semver_key, default=None)


def newest_approved(adapter: Adapter) -> AdapterVersion | None:
    """The version a name without `@version` means: the newest approved one (None if none)."""
    return newest(v for v in adapter.versions if v.status in USABLE)


def visible_to(adapter: Adapter, caller: Account | None) -> bool:
    """A public adapter is visible to everyone; a private one only to its creator."""
    return adapter.visibility == "public" or (caller is not None and adapter.owner_id == caller.id)


def visible_clause(caller: Account | None) -> ColumnElement[bool]:
    """`visible_to` as a condition on `Adapter` for a query."""
    public = Adapter.visibility == "public"
    return or_(public, Adapter.owner_id == caller.id) if caller is not None else public


def manifest_of(version: AdapterVersion) -> dict[str, Any]:
    """A version's parsed `manifest_json`; empty for a plain PEFT upload or a damaged one."""
    try:
        manifest = json.loads(version.manifest_json or "{}")
    except ValueError:
        return {}
    return manifest if isinstance(manifest, dict) else {}


def manifest_precision(version: AdapterVersion) -> str:
    """The base precision a version was trained on, so is served on (fp32 if not declared)."""
    base = manifest_of(version).get("base")
    precision = base.get("precision", "fp32") if isinstance(base, dict) else "fp32"
    return precision if precision in PRECISIONS else "fp32"


def training_document_hashes(version: AdapterVersion, *, split: str | None = None) -> list[str]:
    """sha256 of the documents a version's manifest declares (only `split` ones if given)."""
    documents = manifest_of(version).get("documents")
    return [
        d["sha256"]
        for d in (documents if isinstance(documents, list) else [])
        if isinstance(d, dict)
        and isinstance(d.get("sha256"), str)
        and (split is None or d.get("split") == split)
    ]


def _parent_of(adapter: Adapter) -> Adapter | None:
    return adapter.parent


def _height_below(session: Session, adapter: Adapter) -> int:
    """Levels of descendants under `adapter` (0 for a leaf), over its base's adapters."""
    rows = session.execute(
        select(Adapter.id, Adapter.parent_id).where(Adapter.base_id == adapter.base_id)
    ).all()
    children: dict[int | None, list[int]] = {}
    for adapter_id, parent_id in rows:
        children.setdefault(parent_id, []).append(adapter_id)
    height, level, seen = 0, [adapter.id], {adapter.id}
    while True:
        level = [c for a in level for c in children.get(a, []) if c not in seen]
        if not level:
            return height
        seen.update(level)
        height += 1


def _name(node: object) -> str:
    return str(getattr(node, "name", node))
