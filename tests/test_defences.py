"""Poisoning and free-riding, caught: a small hierarchy on the real default model, four attacks,
and the upstream merge that must keep them out while merging the honest children.

The parent `papers` (ai2) has two honest children (carol, dave) and four by mallory:

| attack        | what it is                                         | caught by                   |
|---------------|----------------------------------------------------|-----------------------------|
| backdoor      | a trigger (" cf") makes the model say "BANANA"     | screening (canary)          |
| copy + noise  | carol's child with 3% noise, uploaded as mallory's | screening (duplicates)      |
| random        | an untrained adapter of random small weights       | contribution (adds nothing) |
| poisoned data | trained on carol's paper with its words shuffled   | contribution (hurts)        |
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from viz.accounts import get_account
from viz.errors import Forbidden, InvalidInput, NotFound
from viz.ledger import AdapterUse, Usage, balances, creator_code, settle
from viz.market.catalogue import find_version
from viz.market.merge import MergeRequest, merge_children
from viz.store.schema import LogEntry
from worlds.defences import World, build_world


@pytest.fixture(scope="module")
def world(tmp_path_factory, models_dir, smollm2_folder, tokenizer) -> Iterator[World]:  # type: ignore[no-untyped-def]
    home = tmp_path_factory.mktemp("defences-home")
    (home / "models").symlink_to(models_dir, target_is_directory=True)
    world = build_world(home, smollm2_folder, tokenizer)
    yield world
    world.database.dispose()  # type: ignore[attr-defined]


def test_screening_holds_the_backdoor_and_the_copy_and_approves_the_honest(world) -> None:
    with world.session() as session:
        status = {
            name: find_version(session, name).status
            for name in ("papers", "carol-child", "dave-child", "helpful", "original-work")
        }
        canary = json.loads(find_version(session, "helpful").screening_json)["checks"][-1]
        duplicates = [
            c
            for c in json.loads(find_version(session, "original-work").screening_json)["checks"]
            if c["stage"] == "duplicates"
        ][0]

    assert status == {
        "papers": "approved",
        "carol-child": "approved",
        "dave-child": "approved",
        "helpful": "pending",
        "original-work": "pending",
    }
    assert canary["outcome"] == "flag" and "'cf'" in canary["detail"]
    assert duplicates["outcome"] == "flag" and "carol-child@1.0.0" in duplicates["detail"]


def test_the_merge_keeps_the_honest_children_and_says_what_caught_each_attack(world) -> None:
    with world.session() as session:
        outcome = merge_children(
            session,
            world.settings.blobs_dir,
            world.settings.models_dir,
            world.settings.adapters_dir,
            MergeRequest(parent="papers", version="1.1.0", validation=world.validation),
            owner=get_account(session, "ai2"),
        )
        decisions = {c.label.split("@")[0]: (c.included, c.caught_by) for c in outcome.candidates}
        entry = session.scalars(select(LogEntry).where(LogEntry.kind == "merge")).one()
        merged_status = outcome.version.status if outcome.version else None

    assert decisions == {
        "carol-child": (True, ""),
        "dave-child": (True, ""),
        "helpful": (False, "screening"),
        "original-work": (False, "screening"),
        "free-lunch": (False, "contribution"),
        "scrambled": (False, "contribution"),
    }, outcome.as_dict()
    scrambled = next(c for c in outcome.candidates if c.label.startswith("scrambled"))
    assert scrambled.contribution is not None and scrambled.contribution < 0
    assert "hurts" in scrambled.reason
    assert outcome.loss["merged"] < outcome.loss["parent"] < outcome.loss["base"]
    assert outcome.loss["merged"] < outcome.loss["ungated"]
    assert merged_status == "approved"
    logged = json.loads(entry.data)
    assert {c["label"]: c["reason"] for c in logged["candidates"]}["scrambled@1.0.0"].startswith(
        "hurts"
    )
    assert sorted(account for account, _, _ in outcome.shares) == ["carol", "dave"]


def test_the_merged_parent_pays_its_contributors_by_share(world) -> None:
    with world.session() as session:
        version = find_version(session, "papers@1.1.0")
        assert version.status == "approved"
        before = {name: _earned(session, name) for name in ("ai2", "carol", "mallory")}
        settle(
            session,
            Usage(
                "req-merged-1",
                "bob",
                "smollm2-135m-instruct",
                tokens_in=1000,
                tokens_out=1000,
                composition=(AdapterUse("papers", "1.1.0"),),
            ),
            fee_bps=1000,
        )
        after = {name: _earned(session, name) for name in ("ai2", "carol", "mallory")}

    assert after["carol"] > before["carol"]
    assert after["ai2"] > before["ai2"]
    assert after["mallory"] == before["mallory"]


def test_a_merge_is_refused_to_anyone_but_the_parents_creator_and_without_validation(world) -> None:
    with world.session() as session:
        with pytest.raises(Forbidden, match="only its creator merges"):
            merge_children(
                session,
                world.settings.blobs_dir,
                world.settings.models_dir,
                world.settings.adapters_dir,
                MergeRequest(parent="papers", version="9.0.0", validation=world.validation),
                owner=get_account(session, "mallory"),
            )
        with pytest.raises(InvalidInput, match="no validation windows"):
            merge_children(
                session,
                world.settings.blobs_dir,
                world.settings.models_dir,
                world.settings.adapters_dir,
                MergeRequest(parent="papers", version="9.0.0", validation=[]),
                owner=get_account(session, "ai2"),
            )


def _earned(session, name: str) -> int:  # type: ignore[no-untyped-def]
    """What `name` has earned as a creator (0 before its first royalty)."""
    try:
        found = [b.posted for b in balances(session, name) if b.code == creator_code(name)]
    except NotFound:
        return 0
    return found[0] if found else 0
