"""Adapters from documents: the data, the QLoRA trap, the output folder, resume and Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from viz.accounts import create_account
from viz.documents import DocumentInput, add_documents
from viz.errors import Forbidden, InvalidInput
from viz.store import session_scope
from viz.training import TrainingConfig, build_training_set, select_documents, windows
from viz.training._model import prepare_model
from viz.training.adapters import load_adapter
from worlds.catalogue import QASPER_PAPERS

PAPERS = sorted(QASPER_PAPERS.glob("*.txt"))[:3]
ANOTHER_PAPER = sorted(QASPER_PAPERS.glob("*.txt"))[3]
DOCUMENT_LIMITS = {"document_bytes_max": 10**8, "documents_max": 100}


def test_windows_overlap_and_keep_the_tail() -> None:
    ids = list(range(10))

    assert windows(ids, 4, 1) == [(0, 1, 2, 3), (3, 4, 5, 6), (6, 7, 8, 9)]
    assert windows(ids, 4, 0)[-1] == (6, 7, 8, 9)
    assert windows(ids[:3], 4, 1) == []


def test_documents_without_training_permission_or_of_others_are_refused(
    sqlite_engine, tmp_path
) -> None:
    with session_scope(sqlite_engine) as session:
        ada, bob = create_account(session, "ada"), create_account(session, "bob")
        add_documents(session, tmp_path, ada, PAPERS[:1], DocumentInput("MIT"), **DOCUMENT_LIMITS)
        add_documents(
            session,
            tmp_path,
            ada,
            PAPERS[1:2],
            DocumentInput("MIT", ai_training="notAllowed"),
            **DOCUMENT_LIMITS,
        )
        add_documents(session, tmp_path, bob, PAPERS[2:3], DocumentInput("MIT"), **DOCUMENT_LIMITS)
        no_derivatives = DocumentInput("CC-BY-ND-4.0")
        add_documents(session, tmp_path, ada, [ANOTHER_PAPER], no_derivatives, **DOCUMENT_LIMITS)

        with pytest.raises(Forbidden) as raised:
            select_documents(session, ada, document_ids=[1, 2, 3, 4])

    assert "document 2" in raised.value.message and "notAllowed" in raised.value.message
    assert "document 3" in raised.value.message and "belongs to bob" in raised.value.message
    assert "document 4" in raised.value.message and "NoDerivatives" in raised.value.message
    assert "document 1" not in raised.value.message


def test_the_split_is_by_whole_document(sqlite_engine, tmp_path, tokenizer) -> None:
    with session_scope(sqlite_engine) as session:
        ada = create_account(session, "ada")
        add_documents(session, tmp_path, ada, PAPERS, DocumentInput("MIT"), **DOCUMENT_LIMITS)
        documents = select_documents(session, ada, owners=[ada])
    training_set = build_training_set(
        documents,
        tmp_path,
        tokenizer,
        sequence_length=64,
        overlap=8,
        held_out_fraction=0.3,
        context_length=8192,
    )

    train_ids = {d.document_id for d in training_set.train}
    held_ids = {d.document_id for d in training_set.held_out}
    assert train_ids and held_ids and not train_ids & held_ids
    assert train_ids | held_ids == {1, 2, 3}
    with pytest.raises(InvalidInput, match="context"):
        build_training_set(
            documents,
            tmp_path,
            tokenizer,
            sequence_length=9000,
            overlap=8,
            held_out_fraction=0.3,
            context_length=8192,
        )
    with pytest.raises(InvalidInput, match="at least 2.*--held-out 0"):
        build_training_set(
            documents[:1],
            tmp_path,
            tokenizer,
            sequence_length=64,
            overlap=8,
            held_out_fraction=0.3,
            context_length=8192,
        )
    alone = build_training_set(  # one document, nothing held out: trained, not evaluated
        documents[:1],
        tmp_path,
        tokenizer,
        sequence_length=64,
        overlap=8,
        held_out_fraction=0,
        context_length=8192,
    )
    assert len(alone.train) == 1 and alone.held_out == () and alone.held_out_windows() == []


def test_a_bad_config_names_every_problem() -> None:
    with pytest.raises(InvalidInput) as raised:
        TrainingConfig(method="magic", rank=0, dropout=1.5, batch_size=0).check()

    for word in ("method", "rank", "dropout", "batch size"):
        assert word in raised.value.message


def test_qlora_gets_gradients_after_an_evaluation_pass(tiny_model_folder) -> None:
    """bitsandbytes' CPU trap: an inference pass repacks 4-bit weights; training must still
    learn afterwards (the loss falls on a repeated batch)."""
    model = prepare_model(
        tiny_model_folder,
        method="qlora",
        precision="nf4",
        rank=8,
        alpha=16,
        dropout=0.0,
        target_modules=("all-linear",),
        seed=0,
    )
    batch = torch.randint(0, 1000, (2, 32), generator=torch.Generator().manual_seed(0))
    model.eval()
    with torch.no_grad():
        model(input_ids=batch)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)

    losses = []
    for _ in range(8):
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())

    assert losses[-1] < losses[0] - 0.5, losses


def test_gradient_checkpointing_is_off_on_the_cpu_unless_asked_and_both_learn(
    tiny_model_folder,
) -> None:
    batch = torch.randint(0, 1000, (2, 32), generator=torch.Generator().manual_seed(0))
    for asked, expected in ((None, False), (True, True)):
        model = prepare_model(
            tiny_model_folder,
            method="lora",
            precision="fp32",
            rank=4,
            alpha=8,
            dropout=0.0,
            target_modules=("q_proj", "v_proj"),
            seed=0,
            checkpointing=asked,
        )
        assert model.base_model.model.is_activation_checkpointing is expected
        model.train()
        model(input_ids=batch, labels=batch).loss.backward()
        grads = [p.grad for n, p in model.named_parameters() if "lora_B" in n]  # A: 0 (B is)
        assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)


# --- the CLI, end to end on a tiny registered base ---------------------------------------------


@pytest.fixture
def catalogue(tmp_path: Path, tiny_model_folder: Path) -> dict[str, str]:
    """A data folder with account ai2, three papers and the tiny base registered as 'tiny'."""
    env = {**os.environ, "VIZ_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1"}
    env.pop("VIZ_DATABASE_URL", None)
    _viz(env, "account", "create", "ai2")
    _viz(env, "documents", "add", *map(str, PAPERS), "--owner", "ai2", "--licence", "CC-BY-4.0")
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
    return env


TRAIN = [
    "adapters",
    "train",
    "--account",
    "ai2",
    "--owner",
    "ai2",
    "--base",
    "tiny",
    "--method",
    "lora",
    "--sequence-length",
    "32",
    "--overlap",
    "4",
    "--batch-size",
    "2",
    "--learning-rate",
    "1e-2",
    "--checkpoint-every",
    "2",
]


def test_train_writes_a_plain_peft_adapter_with_a_manifest(catalogue, tiny_model_folder) -> None:
    result = _viz(catalogue, *TRAIN, "--name", "tiny-qa", "--steps", "6")
    folder = Path(catalogue["VIZ_HOME"]) / "adapters" / "tiny-qa"

    assert "held-out documents" in result.stdout
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md",
        "adapter_config.json",
        "adapter_model.safetensors",
        "viz-manifest.json",
    ]
    assert not list(folder.parent.glob(".*partial"))
    import json

    manifest = json.loads((folder / "viz-manifest.json").read_text())
    assert manifest["base"]["id"] == "tiny" and len(manifest["base"]["weights_sha256"]) == 64
    assert {d["split"] for d in manifest["documents"]} == {"train", "held_out"}
    assert all(d["licence"] == "CC-BY-4.0" for d in manifest["documents"])
    assert manifest["metrics"]["steps"] == 6
    assert "license: cc-by-4.0" in (folder / "README.md").read_text()

    from peft import PeftModel

    from viz.models.loading import load_folder

    evaluated = _viz(catalogue, "adapters", "eval", "tiny-qa")
    assert "held-out documents" in evaluated.stdout and "general sample" in evaluated.stdout
    assert "tiny-qa" in _viz(catalogue, "adapters", "list").stdout

    batch = torch.randint(0, 1000, (1, 16), generator=torch.Generator().manual_seed(1))
    plain = PeftModel.from_pretrained(load_folder(tiny_model_folder, "fp32"), folder).eval()
    ours = load_adapter(folder, load_folder(tiny_model_folder, "fp32"))
    with torch.no_grad():
        assert torch.equal(plain(input_ids=batch).logits, ours(input_ids=batch).logits)


def test_ctrl_c_leaves_a_checkpoint_and_resume_matches_an_uninterrupted_run(catalogue) -> None:
    steps = ["--steps", "40"]  # long enough for the interrupt to land mid-run
    _viz(catalogue, *TRAIN, "--name", "straight", *steps)

    home = Path(catalogue["VIZ_HOME"])
    process = subprocess.Popen(
        [sys.executable, "-m", "viz.cli", *TRAIN, "--name", "paused", *steps],
        env=catalogue,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    checkpoints = home / "adapters" / ".paused.partial" / "checkpoints"
    deadline = time.monotonic() + 120
    while not list(checkpoints.glob("step-*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)

    assert process.returncode == 130, stderr
    assert "--resume" in stderr
    assert not (home / "adapters" / "paused").exists()

    _viz(catalogue, *TRAIN, "--name", "paused", *steps, "--resume")
    straight = load_file(home / "adapters" / "straight" / "adapter_model.safetensors")
    resumed = load_file(home / "adapters" / "paused" / "adapter_model.safetensors")
    for name, tensor in straight.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=0, atol=1e-6)


def test_training_refuses_bad_input_clearly(catalogue) -> None:
    no_docs = _viz(catalogue, *TRAIN, "--name", "none", "--tag", "nothing", check=False)
    zero_rank = _viz(catalogue, *TRAIN, "--name", "zero", "--rank", "0", check=False)
    unknown_base = _viz(
        catalogue,
        "adapters",
        "train",
        "--name",
        "x-y-z",
        "--account",
        "ai2",
        "--owner",
        "ai2",
        "--base",
        "nope",
        check=False,
    )

    assert zero_rank.returncode == 2 and "rank is 0" in zero_rank.stderr
    assert unknown_base.returncode == 3 and "known ids" in unknown_base.stderr
    assert no_docs.returncode == 0 or "no documents" in no_docs.stderr


def _viz(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "viz.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def test_two_processes_train_the_same_adapter_as_one(catalogue) -> None:
    """torchrun + DDP (gloo on CPU): two processes with half the batch each average their
    gradients to the single-process update (dropout off, so only summation order differs)."""
    common = [*TRAIN, "--steps", "4", "--batch-size", "4", "--dropout", "0"]
    _viz(catalogue, *common, "--name", "one-process")
    _viz(catalogue, *common, "--name", "two-processes", "--nproc", "2")

    adapters = Path(catalogue["VIZ_HOME"]) / "adapters"
    one = load_file(adapters / "one-process" / "adapter_model.safetensors")
    two = load_file(adapters / "two-processes" / "adapter_model.safetensors")
    assert any("lora_B" in name and tensor.abs().max() > 0 for name, tensor in one.items())
    for name, tensor in one.items():
        torch.testing.assert_close(two[name], tensor, rtol=1e-3, atol=1e-5)
    import json

    manifest = json.loads((adapters / "two-processes" / "viz-manifest.json").read_text())
    assert manifest["run"]["processes"] == 2
    assert not list(adapters.glob(".*"))


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
def test_a_full_disk_is_reported_with_the_next_step() -> None:
    from viz.errors import LimitExceeded
    from viz.training.checkpoint import writing

    with (
        pytest.raises(LimitExceeded, match="no space left.*--resume"),
        writing(Path("/dev/full"), "run the same command with --resume"),
        open("/dev/full", "wb") as device,
    ):
        device.write(b"x" * 65536)
        device.flush()


def test_base_precision_must_fit_the_method() -> None:
    with pytest.raises(InvalidInput, match="does not go with method"):
        TrainingConfig(method="qlora", base_precision="bf16").check()

    assert TrainingConfig(method="lora", base_precision="bf16").precision == "bf16"
    assert TrainingConfig(method="qlora").precision == "nf4"
