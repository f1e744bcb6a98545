"""A base pretrained only on openly licensed text, its provenance true by construction (issue 23):
a CC-BY-ND paper among the candidates is refused by name, the manifest verifies against the
catalogue, the registry lists the base as open-licensed-only, and an adapter trained on it is
published and served. Tampering, bad input and an interrupted run are each caught."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from click.testing import Result
from openai import OpenAI
from sqlalchemy import select
from typer.testing import CliRunner

from viz.accounts import create_account
from viz.cli import app
from viz.errors import Interrupted, InvalidInput, NotFound
from viz.models import get_base_model
from viz.store import open_database, session_scope
from viz.store.schema import LogEntry
from viz.training.pretrain import PretrainConfig
from viz.training.pretraining import pretrain_from_documents
from worlds.catalogue import QASPER_PAPERS, add_papers
from worlds.serving import serve_process

PAPERS = sorted(QASPER_PAPERS.glob("*.txt"))
OPEN, NO_DERIVATIVES = PAPERS[:3], PAPERS[3]
PRETRAIN = [
    "models",
    "pretrain",
    "--account",
    "ai2",
    "--size",
    "tiny",
    "--tokens",
    "20000",
    "--batch-size",
    "4",
]


def viz(env: dict[str, str], *args: str, check: bool = True) -> Result:
    """`viz ARGS` in this process, with `env`'s data folder."""
    result = CliRunner().invoke(app, list(args), env=env)
    if check:
        assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Account ai2 with three CC-BY papers and a CC-BY-ND one tagged `open`, and the base
    `open-tiny` pretrained on them."""
    folder = tmp_path_factory.mktemp("pretraining")
    env = {**os.environ, "VIZ_HOME": str(folder / "home"), "HF_HUB_OFFLINE": "1"}
    env.pop("VIZ_DATABASE_URL", None)
    viz(env, "account", "create", "ai2")
    attribution = ["--attribution", "Dasigi et al. 2021, QASPER (AI2), CC BY 4.0"]
    viz(env, "documents", "add", *map(str, OPEN), "--owner", "ai2", "--tag", "open",
        "--licence", "CC-BY-4.0", *attribution)  # fmt: skip
    viz(env, "documents", "add", str(NO_DERIVATIVES), "--owner", "ai2", "--tag", "open",
        "--licence", "CC-BY-ND-4.0")  # fmt: skip
    env["PRETRAINED"] = viz(env, *PRETRAIN, "--tag", "open", "--name", "open-tiny").stderr
    return env


def test_a_base_from_open_papers_refuses_the_nd_one_verifies_and_serves_an_adapter(home) -> None:
    assert (
        "refused document 4 (1603.01987.txt): CC-BY-ND-4.0 forbids derivative works"
        in (home["PRETRAINED"])
    )
    verified = viz(home, "models", "verify", "open-tiny")
    assert "verified: 3 documents" in verified.stdout
    listed = viz(home, "models", "list").stdout
    assert any(
        line.split()[0] == "open-tiny" and "open-licensed-only" in line.split()
        for line in listed.splitlines()
    )
    folder = Path(home["VIZ_HOME"]) / "models" / "pretrained" / "open-tiny" / "model"
    manifest = json.loads((folder / "viz-manifest.json").read_text())
    assert [d["id"] for d in manifest["documents"]] == [1, 2, 3]
    assert {d["licence"] for d in manifest["documents"]} == {"CC-BY-4.0"}
    assert manifest["refused"][0]["id"] == 4
    assert (
        manifest["metrics"]["held_out_perplexity"]
        < manifest["metrics"]["held_out_perplexity_initial"]
    )
    assert "Dasigi et al. 2021" in (folder / "README.md").read_text()

    viz(home, "adapters", "train", "--name", "open-qa", "--account", "ai2", "--base", "open-tiny",
        "--documents", "1", "--documents", "2", "--documents", "3", "--method", "lora",
        "--steps", "2", "--batch-size", "2", "--sequence-length", "64",
        "--eval-windows", "2")  # fmt: skip
    viz(home, "market", "publish", str(Path(home["VIZ_HOME"]) / "adapters" / "open-qa"),
        "--account", "ai2", "--name", "open-qa", "--version", "1.0.0", "--licence", "CC-BY-4.0",
        "--price-in", "100", "--price-out", "300")  # fmt: skip
    viz(home, "account", "create", "ada")
    key = viz(home, "keys", "create", "--account", "ada").stdout.splitlines()[0]
    viz(home, "ledger", "topup", "ada", "1000000", "--id", "invoice-1")
    with serve_process(home) as (url, _):
        client = OpenAI(base_url=f"{url}/v1", api_key=key)
        answer = client.completions.create(
            model="open-qa", prompt="Text classification", max_tokens=8, temperature=0
        )
        cards = httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {key}"}).json()
    assert answer.usage is not None and answer.usage.completion_tokens == 8
    card = next(m for m in cards["data"] if m["id"] == "open-tiny")["viz"]
    assert card["provenance"] == "open-licensed-only" and card["licence"] == "CC-BY-4.0"
    adapter = next(m for m in cards["data"] if m["id"] == "open-qa@1.0.0")["viz"]
    assert adapter["base"] == "open-tiny"

    with session_scope(open_database(f"sqlite:///{home['VIZ_HOME']}/viz.db")) as session:
        entries = session.scalars(select(LogEntry).where(LogEntry.kind == "base_pretrained"))
        logged = [json.loads(entry.data) for entry in entries]
    assert [(e["base"], e["weights_sha256"]) for e in logged] == [
        ("open-tiny", manifest["weights_sha256"])
    ]


def test_verify_catches_changed_weights_and_a_rewritten_manifest(home) -> None:
    folder = Path(home["VIZ_HOME"]) / "models" / "pretrained" / "open-tiny" / "model"
    manifest_path, weights = folder / "viz-manifest.json", folder / "model.safetensors"
    original_manifest, original_weights = manifest_path.read_bytes(), weights.read_bytes()
    try:
        manifest = json.loads(original_manifest)
        manifest["documents"][0]["licence"] = "CC0-1.0"
        manifest["licence"] = "CC0-1.0"
        manifest_path.write_text(json.dumps(manifest))
        failed = viz(home, "models", "verify", "open-tiny", check=False)
        assert failed.exit_code == 1
        assert "document 1: catalogued under CC-BY-4.0, the manifest says CC0-1.0" in failed.stderr
        assert "registered under CC-BY-4.0, the manifest says CC0-1.0" in failed.stderr
        manifest_path.write_bytes(original_manifest)

        weights.write_bytes(original_weights[:-4] + b"\0\0\0\0")
        failed = viz(home, "models", "verify", "open-tiny", check=False)
        assert failed.exit_code == 1 and "changed after pretraining" in failed.stderr
    finally:
        manifest_path.write_bytes(original_manifest)
        weights.write_bytes(original_weights)
    assert viz(home, "models", "verify", "open-tiny").exit_code == 0


def test_open_licensed_only_needs_a_manifest_that_verifies(home, tmp_path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(Path(home["VIZ_HOME"]) / "models" / "pretrained" / "open-tiny" / "model", copy)
    add = ["models", "add", str(copy), "--provenance", "open-licensed-only"]

    wrong_licence = viz(home, *add, "--id", "relabelled", "--licence", "MIT", check=False)
    assert "require the base to carry CC-BY-4.0, not MIT" in wrong_licence.output
    assert "registered copy" in viz(home, *add, "--id", "copy", "--licence", "CC-BY-4.0").output

    (copy / "viz-manifest.json").unlink()
    claimed = viz(home, *add, "--id", "claimed", "--licence", "CC-BY-4.0", check=False)
    assert claimed.exit_code != 0 and "has no viz-manifest.json" in claimed.output
    assert "claimed" not in viz(home, "models", "list").output


def test_bad_pretraining_requests_get_a_clear_message(home) -> None:
    for args, message in [
        (["--name", "open-tiny"], "already registered"),
        (["--name", "Bad Name"], "is not valid"),
        (["--name", "only-nd", "--documents", "4"], "forbids derivative"),
        (["--name", "none", "--tag", "absent"], "no documents selected"),
        (["--name", "one", "--documents", "1"], "needs at least two"),
        (["--name", "too-long", "--tag", "open", "--tokens", "10000000"], "passes over"),
        (["--name", "huge", "--tag", "open", "--batch-size", "512"], "needs at least 512"),
        (["--name", "fresh", "--tag", "open", "--resume"], "no interrupted pretraining"),
        (["--name", "giant", "--tag", "open", "--size", "giant"], "not one of tiny, small, base"),
    ]:
        result = viz(home, *PRETRAIN, *args, check=False)
        assert result.exit_code != 0, args
        assert message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
    listed = viz(home, "models", "list").stdout
    assert "too-long" not in listed and "huge" not in listed  # nothing half-registered


def test_documents_of_another_account_are_refused_by_name(sqlite_engine, tmp_path) -> None:
    blobs = tmp_path / "blobs"
    with session_scope(sqlite_engine) as session:
        ai2, other = create_account(session, "ai2"), create_account(session, "other")
        add_papers(session, blobs, ai2, [p.stem for p in OPEN[:2]])
        theirs = add_papers(session, blobs, other, [OPEN[2].stem])
    with pytest.raises(InvalidInput, match="no document can be pretrained on") as raised:
        pretrain_from_documents(
            sqlite_engine,
            name="borrowed",
            account="ai2",
            config=PretrainConfig(tokens=4096, batch_size=4),
            blobs_dir=blobs,
            models_dir=tmp_path / "models",
            document_ids=theirs,
        )
    assert f"document {theirs[0]}" in raised.value.message
    assert "belongs to other, not ai2" in raised.value.message


def test_an_interrupted_run_registers_nothing_and_resumes(sqlite_engine, tmp_path) -> None:
    blobs = tmp_path / "blobs"
    with session_scope(sqlite_engine) as session:
        ai2 = create_account(session, "ai2")
        add_papers(session, blobs, ai2, [p.stem for p in OPEN])
    arguments = dict(
        name="resumed",
        account="ai2",
        config=PretrainConfig(tokens=20 * 4 * 128, batch_size=4, checkpoint_every=100),
        blobs_dir=blobs,
        models_dir=tmp_path / "models",
        owners=["ai2"],
    )

    def interrupt(step: int, steps: int, loss: float, speed: float) -> None:
        if step == 6:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C: the loop saves and stops

    with pytest.raises(Interrupted, match="--resume"):
        pretrain_from_documents(sqlite_engine, progress=interrupt, **arguments)  # type: ignore[arg-type]
    with session_scope(sqlite_engine) as session, pytest.raises(NotFound):
        get_base_model(session, "resumed")

    steps: list[int] = []
    done = pretrain_from_documents(
        sqlite_engine,
        resume=True,
        progress=lambda step, *_: steps.append(step),
        **arguments,  # type: ignore[arg-type]
    )
    assert steps[0] == 7 and steps[-1] == 20
    assert len(done.result.losses) == 20
    assert done.record.provenance_class == "open-licensed-only"


def test_two_processes_pretrain_the_base_one_process_does(home) -> None:
    """`--nproc 2` (torchrun on this machine) and torchrun started by hand, as on a cluster,
    split each batch in two and end where one process did."""
    one = _manifest(home, "open-tiny")
    viz(home, *PRETRAIN, "--tag", "open", "--name", "two-processes", "--nproc", "2")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", "2", "-m", "viz.cli", *PRETRAIN, "--tag", "open",
               "--name", "by-torchrun"]  # fmt: skip
    environment = {**home, "OMP_NUM_THREADS": "1"}
    started = subprocess.run(command, env=environment, capture_output=True, text=True)
    assert started.returncode == 0, started.stderr

    for name in ("two-processes", "by-torchrun"):
        two = _manifest(home, name)
        assert len(two["losses"]) == len(one["losses"])
        assert two["losses"] == pytest.approx(one["losses"], abs=0.02)
        assert two["tokenizer"]["sha256"] == one["tokenizer"]["sha256"]
        assert "verified: 3 documents" in viz(home, "models", "verify", name).output
    assert started.stdout.count("registered by-torchrun") == 1  # by the main process only


def test_a_size_too_large_for_this_machine_is_refused_before_training(home) -> None:
    result = viz(home, *PRETRAIN, "--tag", "open", "--name", "too-big", "--size", "1b",
                 "--tokens", "2048", "--batch-size", "1", check=False)  # fmt: skip
    if "GiB to train" not in result.output:  # a machine with over 30 GB could train it
        pytest.skip("this machine has the memory for size 1b")
    assert result.exit_code != 0 and "choose a smaller size" in result.output


def _manifest(home: dict[str, str], name: str) -> dict:
    folder = Path(home["VIZ_HOME"]) / "models" / "pretrained" / name / "model"
    return json.loads((folder / "viz-manifest.json").read_text())
