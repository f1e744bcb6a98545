"""The hierarchy: adapters with parents over a base, general -> language -> domain -> sub-domain.

A creator names the parent when publishing (`viz market publish --parent english`); the catalogue
refuses a parent on another base and a parent that would close a loop. Serving a child applies
its whole chain, root first (`viz.serving.resolve`); the recommender walks the tree down.

    roots = adapter_tree(session, "smollm2-135m-instruct", caller=account)
    print(render_tree("smollm2-135m-instruct", roots))

Only adapters with an approved version are in the tree, and only those the caller may use
(public ones and the caller's own private ones); a child whose parent is hidden is not shown.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from viz.market.hierarchy import PARENT_DEPTH_MAX, newest_approved, visible_to
from viz.store.schema import Account, Adapter, AdapterVersion

__all__ = ["LEVELS", "Node", "adapter_tree", "level_name", "render_tree", "walk"]

LEVELS = ("language", "domain", "sub-domain")


@dataclass
class Node:
    """One adapter in the tree, with its newest approved version."""

    adapter: Adapter
    version: AdapterVersion
    depth: int  # 1 = a child of the base
    children: list[Node] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.adapter.name

    @property
    def label(self) -> str:
        return f"{self.adapter.name}@{self.version.version}"


def level_name(depth: int) -> str:
    return LEVELS[min(depth, len(LEVELS)) - 1]


def adapter_tree(session: Session, base_id: str, *, caller: Account | None = None) -> list[Node]:
    """The roots (adapters without a parent) of `base_id`'s tree, children sorted by name."""
    adapters = session.scalars(
        select(Adapter)
        .where(Adapter.base_id == base_id)
        .options(selectinload(Adapter.versions), selectinload(Adapter.tags))
        .order_by(Adapter.name)
    ).all()
    usable: dict[int, tuple[Adapter, AdapterVersion]] = {}
    for adapter in adapters:
        if not visible_to(adapter, caller):
            continue
        newest = newest_approved(adapter)
        if newest is not None:
            usable[adapter.id] = (adapter, newest)
    children: dict[int | None, list[int]] = {}
    for adapter_id, (adapter, _) in usable.items():
        children.setdefault(adapter.parent_id, []).append(adapter_id)

    def grow(adapter_id: int, depth: int) -> Node:
        adapter, version = usable[adapter_id]
        node = Node(adapter, version, depth)
        # The catalogue refuses loops and chains over the limit; this bounds a damaged one.
        if depth <= PARENT_DEPTH_MAX:
            node.children = [grow(c, depth + 1) for c in children.get(adapter_id, [])]
        return node

    return [grow(a, 1) for a in children.get(None, [])]


def walk(roots: list[Node]) -> list[Node]:
    """Every node, parents before children."""
    found: list[Node] = []
    stack = list(reversed(roots))
    while stack:
        node = stack.pop()
        found.append(node)
        stack.extend(reversed(node.children))
    return found


def render_tree(base_id: str, roots: list[Node], *, prices: bool = True) -> str:
    """The tree as text, one adapter per line, with its level, price and description."""
    lines = [f"{base_id} (base)"]

    def draw(nodes: list[Node], prefix: str) -> None:
        for index, node in enumerate(nodes):
            last = index == len(nodes) - 1
            price = (
                f"  {node.version.price_in_micro}/{node.version.price_out_micro} per 1k in/out"
                if prices
                else ""
            )
            about = f"  - {node.adapter.description}" if node.adapter.description else ""
            lines.append(
                f"{prefix}{'└── ' if last else '├── '}{node.label} "
                f"[{level_name(node.depth)}]{price}{about}"
            )
            draw(node.children, prefix + ("    " if last else "│   "))

    draw(roots, "")
    if not roots:
        lines.append("(no published adapters on this base yet)")
    return "\n".join(lines)
