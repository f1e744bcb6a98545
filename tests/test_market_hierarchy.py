"""The hierarchy's one parent walk (`viz.market.hierarchy.walk_parents`) and the rules next to it:
order, depth limit, loops, a missing parent, newest approved, visibility, manifests."""

from __future__ import annotations

import pytest

from viz.errors import Conflict, InvalidInput
from viz.market.hierarchy import (
    PARENT_DEPTH_MAX,
    ancestors,
    manifest_of,
    manifest_precision,
    newest,
    newest_approved,
    training_document_hashes,
    visible_to,
    walk_parents,
)
from viz.store.schema import Account, Adapter, AdapterVersion


def chain_of(n: int) -> dict[str, str | None]:
    """a0 <- a1 <- ... <- a{n}: each a{i} is the parent of a{i+1}; a0 is a root."""
    return {f"a{i}": (f"a{i - 1}" if i else None) for i in range(n + 1)}


def test_the_walk_gives_ancestors_nearest_first_and_stops_at_a_root() -> None:
    parents = chain_of(3)
    assert walk_parents("a3", parents.get) == ["a2", "a1", "a0"]
    assert walk_parents("a0", parents.get) == []


def test_the_walk_stops_at_a_missing_parent() -> None:
    # "gone" is named as a parent but has no entry: it is the last ancestor found.
    parents: dict[str, str | None] = {"leaf": "mid", "mid": "gone"}
    assert walk_parents("leaf", parents.get) == ["mid", "gone"]


def test_the_walk_allows_the_limit_and_refuses_one_more() -> None:
    at_limit = chain_of(PARENT_DEPTH_MAX)
    assert len(walk_parents(f"a{PARENT_DEPTH_MAX}", at_limit.get)) == PARENT_DEPTH_MAX

    deeper = chain_of(PARENT_DEPTH_MAX + 1)
    leaf = f"a{PARENT_DEPTH_MAX + 1}"
    with pytest.raises(InvalidInput, match=f"more than {PARENT_DEPTH_MAX} ancestors"):
        walk_parents(leaf, deeper.get)
    assert len(walk_parents(leaf, deeper.get, strict=False)) == PARENT_DEPTH_MAX
    assert len(walk_parents(leaf, deeper.get, limit=None)) == PARENT_DEPTH_MAX + 1
    assert walk_parents("a3", deeper.get, limit=2, strict=False) == ["a2", "a1"]


def test_the_walk_refuses_a_loop_or_stops_before_it() -> None:
    loop: dict[str, str | None] = {"a": "b", "b": "c", "c": "a"}
    with pytest.raises(Conflict, match="loops"):
        walk_parents("a", loop.get)
    assert walk_parents("a", loop.get, strict=False) == ["b", "c"]
    to_self: dict[str, str | None] = {"a": "a"}
    assert walk_parents("a", to_self.get, strict=False) == []


def test_ancestors_walk_catalogue_rows() -> None:
    root = Adapter(name="english")
    domain = Adapter(name="nlp", parent=root)
    leaf = Adapter(name="qa", parent=domain)
    assert [a.name for a in ancestors(leaf)] == ["nlp", "english"]
    root.parent = leaf
    with pytest.raises(Conflict):
        ancestors(leaf)


def version(number: str, status: str = "approved", manifest: str = "") -> AdapterVersion:
    return AdapterVersion(version=number, status=status, manifest_json=manifest)


def test_newest_is_by_semver_and_newest_approved_skips_the_rest() -> None:
    adapter = Adapter(name="qa")
    adapter.versions = [
        version("1.10.0", "pending"),
        version("1.2.0"),
        version("1.9.0"),
        version("2.0.0-rc.1", "pending"),
        version("1.9.1", "taken_down"),
    ]
    assert newest(adapter.versions).version == "2.0.0-rc.1"  # type: ignore[union-attr]
    assert newest_approved(adapter).version == "1.9.0"  # type: ignore[union-attr]
    release = newest([version("1.0.0-rc.2"), version("1.0.0"), version("1.0.0-rc.10")])
    assert release.version == "1.0.0"  # type: ignore[union-attr]
    adapter.versions = [version("1.0.0", "rejected")]
    assert newest_approved(adapter) is None
    assert newest([]) is None


def test_a_private_adapter_is_visible_only_to_its_creator() -> None:
    ada, bob = Account(id=1, name="ada"), Account(id=2, name="bob")
    private = Adapter(name="secret", owner_id=1, visibility="private")
    public = Adapter(name="open", owner_id=1, visibility="public")
    assert visible_to(private, ada)
    assert not visible_to(private, bob)
    assert not visible_to(private, None)
    assert visible_to(public, bob) and visible_to(public, None)


def test_manifests_are_parsed_in_one_place() -> None:
    manifest = (
        '{"base": {"precision": "nf4"}, "documents": ['
        '{"sha256": "aa", "split": "train"}, {"sha256": "bb", "split": "held_out"}, {"id": 3}]}'
    )
    trained = version("1.0.0", manifest=manifest)
    assert manifest_precision(trained) == "nf4"
    assert training_document_hashes(trained) == ["aa", "bb"]
    assert training_document_hashes(trained, split="train") == ["aa"]
    for damaged in ("", "{not json", "[1, 2]", '{"base": "fp32", "documents": 7}'):
        plain = version("1.0.0", manifest=damaged)
        assert manifest_precision(plain) == "fp32"
        assert training_document_hashes(plain) == []
    assert manifest_of(version("1.0.0", manifest="[1]")) == {}
