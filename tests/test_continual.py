"""Continual updates: a new version starts from the previous one, guarded against forgetting.

The mechanics run on a tiny random base (fast); `bench/continual.py` measures forgetting and
gain on the real default model.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.test_training import _viz
from viz.accounts import create_account, get_account
from viz.documents import DocumentInput, add_documents, get_document
from viz.errors import InvalidInput
from viz.store import session_scope
from viz.training import TrainingConfig
from viz.training.adapters import load_adapter, read_manifest
from viz.training.continual import (
    continual_report,
    continual_start,
    earlier_documents,
    parse_guard,
)
from viz.training.evaluate import perplexity
from viz.training.recipe import train_from_documents, update_from_documents
from worlds.catalogue import QASPER_PAPERS, add_tiny_base

PAPERS = sorted(QASPER_PAPERS.glob("*.txt"))
CONFIG = TrainingConfig(
    method="lora",
    base_precision="fp32",
    rank=4,
    alpha=8,
    learning_rate=1e-2,
    steps=6,
    batch_size=2,
    sequence_length=32,
    overlap=4,
    held_out_fraction=0.34,
    checkpoint_every=1000,
)


def test_guards_combine_with_plus_and_a_bad_one_says_what_to_use() -> None:
    assert parse_guard("naive").name == "naive"
    assert parse_guard("replay").replay and parse_guard("replay").penalty is None
    ewc = parse_guard("replay+ewc", strength=2.0)
    assert (ewc.replay, ewc.penalty, ewc.strength, ewc.name) == (True, "ewc", 2.0, "replay+ewc")
    assert parse_guard("olora").replay is False

    with pytest.raises(InvalidInput, match="use naive, or replay, l2, ewc, olora"):
        parse_guard("forget-nothing")
    with pytest.raises(InvalidInput, match="choose one of them"):
        parse_guard("l2+ewc")
    with pytest.raises(InvalidInput, match="strength -1"):
        parse_guard("l2", strength=-1)


@dataclass
class Creator:
    engine: object
    blobs: Path
    adapters: Path
    base_folder: Path
    tokenizer: object
    v1: Path
    new_documents: list[int]

    def update(self, guard: str, name: str, strength: float | None = None, watch=None):  # type: ignore[no-untyped-def]
        return update_from_documents(
            self.engine,  # type: ignore[arg-type]
            previous=self.v1.name,
            name=name,
            guard=parse_guard(guard, strength=strength),
            blobs_dir=self.blobs,
            models_dir=self.adapters.parent / "models",
            adapters_dir=self.adapters,
            document_ids=self.new_documents,
            steps=6,
            held_out_fraction=0.5,
            show_progress=False,
            watch=watch,
        )


@pytest.fixture
def creator(sqlite_engine, tmp_path, tiny_model_folder, tokenizer) -> Creator:  # type: ignore[no-untyped-def]
    """ai2 with version 1 of `papers` trained on three papers, and two new papers to add."""
    blobs = tmp_path / "blobs"
    with session_scope(sqlite_engine) as session:
        ai2 = create_account(session, "ai2")
        limits = {"document_bytes_max": 10**8, "documents_max": 10}
        added, _ = add_documents(session, blobs, ai2, PAPERS[:3], DocumentInput("MIT"), **limits)
        new, _ = add_documents(session, blobs, ai2, PAPERS[3:5], DocumentInput("MIT"), **limits)
        add_tiny_base(session, tiny_model_folder)
        added_ids, new_ids = [d.id for d in added], [d.id for d in new]
    v1 = train_from_documents(
        sqlite_engine,
        name="papers",
        account="ai2",
        base="tiny",
        config=CONFIG,
        blobs_dir=blobs,
        models_dir=tmp_path / "models",
        adapters_dir=tmp_path / "adapters",
        document_ids=added_ids,
        show_progress=False,
    ).folder
    return Creator(
        sqlite_engine, blobs, tmp_path / "adapters", tiny_model_folder, tokenizer, v1, new_ids
    )


def test_an_update_starts_from_the_previous_version_and_replays_its_documents(creator) -> None:
    result = creator.update("replay", "papers-v2")
    start = result.manifest["start"]
    report = continual_report(result.manifest)

    v1_weights = (creator.v1 / "adapter_model.safetensors").read_bytes()
    assert start["previous"] == {
        "name": "papers",
        "weights_sha256": hashlib.sha256(v1_weights).hexdigest(),
    }
    assert start["guard"]["name"] == "replay" and start["replay_windows"] > 0
    assert start["forgetting_measured_on"] == "earlier held-out documents"
    # The update's starting point is version 1: its measured perplexity is version 1's.
    with session_scope(creator.engine) as session:
        earlier = earlier_documents(
            session, creator.blobs, creator.tokenizer, creator.v1, get_account(session, "ai2")
        )
    windows = continual_start(
        creator.v1, earlier, parse_guard("replay"), (), new_windows=1, seed=0
    ).evaluations["earlier"]
    from viz.models.loading import load_folder

    v1 = load_adapter(creator.v1, load_folder(creator.base_folder, "fp32"))
    assert perplexity(v1, windows) == pytest.approx(report.earlier_before, rel=1e-4)
    assert report.gain > 0  # it learned the new papers
    assert (
        load_file(result.folder / "adapter_model.safetensors").keys()
        == load_file(creator.v1 / "adapter_model.safetensors").keys()
    )


def test_a_penalty_keeps_the_new_version_near_the_previous_one(creator) -> None:
    v1 = load_file(creator.v1 / "adapter_model.safetensors")

    def drift(folder: Path) -> float:
        tensors = load_file(folder / "adapter_model.safetensors")
        return sum(float((tensors[k] - v1[k]).pow(2).sum()) for k in v1) ** 0.5

    naive = creator.update("naive", "papers-naive")
    l2 = creator.update("l2", "papers-l2", strength=50.0)
    ewc = creator.update("ewc", "papers-ewc", strength=50.0)

    assert drift(l2.folder) < 0.5 * drift(naive.folder)
    assert drift(ewc.folder) < drift(naive.folder)
    assert naive.manifest["start"]["replay_windows"] == 0


def test_a_watcher_sees_every_step_on_the_windows_the_report_measures(creator) -> None:
    seen: list[tuple[float, float]] = []

    def watch(model, evaluations) -> None:  # type: ignore[no-untyped-def]
        seen.append(
            (perplexity(model, evaluations["earlier"]), perplexity(model, evaluations["new"]))
        )

    report = continual_report(creator.update("replay", "papers-watched", watch=watch).manifest)

    assert len(seen) == 6  # one call per step
    assert seen[-1] == pytest.approx((report.earlier_after, report.new_after), rel=1e-3)


def test_olora_keeps_the_previous_ranks_frozen_and_adds_new_ones(creator) -> None:
    result = creator.update("olora", "papers-olora")
    v1 = load_file(creator.v1 / "adapter_model.safetensors")
    v2 = load_file(result.folder / "adapter_model.safetensors")

    assert result.manifest["lora"]["r"] == 2 * read_manifest(creator.v1)["lora"]["r"]
    for name, old in v1.items():
        if "lora_A" in name:
            assert torch.equal(v2[name][:4], old)
            assert not torch.equal(v2[name][4:], torch.zeros_like(v2[name][4:]))
        else:
            assert torch.equal(v2[name][:, :4], old)


def test_documents_withdrawn_since_are_not_replayed(creator) -> None:
    with session_scope(creator.engine) as session:
        get_document(session, 1).ai_training = "notAllowed"
    result = creator.update("replay", "papers-v2")

    assert any(
        "ai_training is now notAllowed" in s for s in result.manifest["start"]["skipped_documents"]
    )
    assert 1 not in result.manifest["start"]["earlier_documents"]

    with session_scope(creator.engine) as session:
        for document_id in (2, 3):
            get_document(session, document_id).ai_training = "notAllowed"
    with pytest.raises(InvalidInput, match="forgetting cannot be measured"):
        creator.update("replay", "papers-v3")


# --- the CLI ---------------------------------------------------------------------------------


def test_viz_adapters_update_prints_forgetting_and_gain(tmp_path, tiny_model_folder) -> None:
    env = {**os.environ, "VIZ_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1"}
    env.pop("VIZ_DATABASE_URL", None)
    _viz(env, "account", "create", "ai2")
    _viz(env, "documents", "add", *map(str, PAPERS[:4]), "--owner", "ai2", "--licence", "MIT")
    _viz(
        env,
        "models",
        "add",
        str(tiny_model_folder),
        "--id",
        "tiny",
        "--licence",
        "MIT",
        "--provenance",
        "unknown",
    )
    _viz(
        env, "adapters", "train", "--name", "papers", "--account", "ai2", "--base", "tiny",
        "--documents", "1", "--documents", "2", "--method", "lora", "--sequence-length", "32",
        "--steps", "3", "--batch-size", "2",
    )  # fmt: skip

    bad = _viz(
        env, "adapters", "update", "papers", "--documents", "3", "--guard", "hope", check=False
    )
    assert bad.returncode == 2 and "use naive, or replay" in bad.stderr

    done = _viz(
        env, "adapters", "update", "papers", "--documents", "3", "--documents", "4",
        "--held-out", "0.5", "--steps", "3", "--batch-size", "2",
    )  # fmt: skip
    assert "forgetting" in done.stdout and "gain" in done.stdout
    assert (Path(env["VIZ_HOME"]) / "adapters" / "papers-v2" / "viz-manifest.json").is_file()
