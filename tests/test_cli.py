"""The `viz` command as a user runs it: exit codes and what is printed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from viz.cli import app
from viz.store import head_revision
from worlds.catalogue import QASPER_PAPERS

PAPERS = [QASPER_PAPERS / "1503.00841.txt", QASPER_PAPERS / "1601.02403.txt"]


@pytest.fixture
def viz(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, models_dir: Path):  # type: ignore[no-untyped-def]
    """Run `viz ARGS` with a fresh data folder (sharing the session's converted model cache)."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "models").symlink_to(models_dir, target_is_directory=True)
    monkeypatch.setenv("VIZ_HOME", str(home))
    monkeypatch.delenv("VIZ_DATABASE_URL", raising=False)
    runner = CliRunner()

    def run(*args: str):  # type: ignore[no-untyped-def]
        return runner.invoke(app, list(args))

    return run


def test_help_lists_every_group_with_an_example(viz) -> None:
    result = viz("--help")

    assert result.exit_code == 0
    for group in (
        "account",
        "keys",
        "documents",
        "models",
        "adapters",
        "market",
        "log",
        "ledger",
        "db",
        "generate",
    ):
        assert group in result.output
        assert f"viz {group}" in result.output


def test_every_command_help_carries_an_example(viz) -> None:
    commands = [
        ("account", "create"),
        ("account", "list"),
        ("account", "show"),
        ("keys", "create"),
        ("keys", "list"),
        ("keys", "revoke"),
        ("documents", "add"),
        ("documents", "list"),
        ("documents", "show"),
        ("models", "list"),
        ("models", "show"),
        ("models", "add"),
        ("db", "upgrade"),
        ("db", "status"),
        ("generate",),
        ("serve",),
        ("adapters", "train"),
        ("adapters", "train-reader"),
        ("adapters", "update"),
        ("adapters", "eval"),
        ("adapters", "list"),
        ("market", "publish"),
        ("market", "merge"),
        ("market", "search"),
        ("market", "show"),
        ("market", "takedown"),
        ("market", "restore"),
        ("market", "approve"),
        ("market", "list-document"),
        ("log", "checkpoint"),
        ("log", "prove"),
        ("log", "consistency"),
        ("log", "export"),
        ("log", "verify"),
        ("ledger", "topup"),
        ("ledger", "meter"),
        ("ledger", "balance"),
        ("ledger", "history"),
        ("ledger", "statement"),
        ("ledger", "payout"),
        ("ledger", "credit-limit"),
        ("ledger", "expire"),
        ("ledger", "release-escrow"),
        ("ledger", "verify"),
        ("ledger", "anchor"),
    ]
    for command in commands:
        result = viz(*command, "--help")
        assert result.exit_code == 0, command
        assert "Example: viz" in result.output, command


def test_account_and_key_lifecycle(viz) -> None:
    assert viz("account", "create", "ada").exit_code == 0

    created = viz("keys", "create", "--account", "ada", "--label", "laptop")
    assert created.exit_code == 0
    token = re.search(r"viz_[0-9a-f]{16}_[0-9a-f]{64}", created.output)
    assert token is not None
    key_id = token.group(0).split("_")[1]

    listed = viz("keys", "list", "--account", "ada")
    assert key_id in listed.output and "active" in listed.output
    assert token.group(0).split("_")[2] not in listed.output

    assert viz("keys", "revoke", key_id).exit_code == 0
    assert "revoked" in viz("keys", "list", "--account", "ada").output
    again = viz("keys", "revoke", key_id)
    assert again.exit_code == 6
    assert "already revoked" in again.output


def test_errors_are_one_line_with_an_exit_code_not_a_traceback(viz) -> None:
    viz("account", "create", "ada")

    duplicate = viz("account", "create", "ada")
    bad_name = viz("account", "create", "Ada Lovelace")
    unknown = viz("keys", "list", "--account", "nobody")

    assert (duplicate.exit_code, bad_name.exit_code, unknown.exit_code) == (6, 2, 3)
    assert "error: account 'ada' already exists" in duplicate.output
    assert "viz account create nobody" in unknown.output
    for result in (duplicate, bad_name, unknown):
        assert "Traceback" not in result.output


def test_documents_add_list_show(viz) -> None:
    viz("account", "create", "ai2", "--kind", "firm")

    added = viz(
        "documents",
        "add",
        *map(str, PAPERS),
        "--owner",
        "ai2",
        "--licence",
        "cc-by-4.0",
        "--attribution",
        "QASPER, CC BY 4.0",
        "--tag",
        "nlp",
    )
    assert added.exit_code == 0, added.output
    assert added.output.count("added document") == 2

    listed = viz("documents", "list", "--tag", "nlp")
    assert "Robustly Leveraging Prior Knowledge" in listed.output
    assert "CC-BY-4.0" in listed.output

    shown = viz("documents", "show", "1", "--text")
    assert "sha256:" in shown.output and "QASPER, CC BY 4.0" in shown.output
    assert PAPERS[0].read_text()[:200] in shown.output


def test_a_bad_licence_or_duplicate_adds_nothing(viz, tmp_path) -> None:
    viz("account", "create", "ai2")
    bad = viz("documents", "add", str(PAPERS[0]), "--owner", "ai2", "--licence", "CC-BY-4.1")
    assert bad.exit_code == 2
    assert "CC-BY-4.0" in bad.output

    viz("documents", "add", str(PAPERS[0]), "--owner", "ai2", "--licence", "CC-BY-4.0")
    duplicate = viz(
        "documents",
        "add",
        str(PAPERS[0]),
        str(PAPERS[1]),
        "--owner",
        "ai2",
        "--licence",
        "CC-BY-4.0",
    )
    assert duplicate.exit_code == 6
    assert "is document 1" in duplicate.output
    assert "1601.02403" not in viz("documents", "list").output

    skipped = viz(
        "documents",
        "add",
        str(PAPERS[0]),
        str(PAPERS[1]),
        "--owner",
        "ai2",
        "--licence",
        "CC-BY-4.0",
        "--skip-existing",
    )
    assert skipped.exit_code == 0
    assert "skipped 1503.00841.txt" in skipped.output


def test_an_unreadable_document_is_refused(viz, tmp_path) -> None:
    viz("account", "create", "ai2")
    binary = tmp_path / "image.txt"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")

    result = viz("documents", "add", str(binary), "--owner", "ai2", "--licence", "MIT")

    assert result.exit_code == 2
    assert "not UTF-8" in result.output


def test_db_upgrade_and_status(viz) -> None:
    first = viz("db", "upgrade")
    second = viz("db", "upgrade")

    assert first.exit_code == 0 and f"upgraded from empty to {head_revision()}" in first.output
    assert f"already at revision {head_revision()}" in second.output
    assert f"revision: {head_revision()}" in viz("db", "status").output


def test_bad_settings_are_reported(viz, monkeypatch) -> None:
    monkeypatch.setenv("VIZ_DOCUMENT_BYTES_MAX", "-5")

    result = viz("account", "list")

    assert result.exit_code == 2
    assert "VIZ_DOCUMENT_BYTES_MAX" in result.output


@pytest.mark.model
def test_generate_answers_offline(viz) -> None:
    result = viz("generate", "What is the capital of France?", "--max-tokens", "32")

    assert result.exit_code == 0, result.output
    assert "Paris" in result.output


def test_generate_refuses_unknown_models_and_limits(viz) -> None:
    unknown = viz("generate", "hi", "--model", "nope")
    too_long = viz("generate", "hi", "--max-tokens", "99999")

    assert unknown.exit_code == 3 and "smollm2-135m-instruct" in unknown.output
    assert too_long.exit_code == 7 and "VIZ_GENERATE_TOKENS_MAX" in too_long.output


@pytest.mark.model
def test_models_show_prints_provenance_and_memory(viz) -> None:
    result = viz("models", "show", "smollm2-135m-instruct")

    assert result.exit_code == 0, result.output
    assert "web-crawl" in result.output and "Apache-2.0" in result.output
    for precision in ("fp32", "bf16", "nf4"):
        assert re.search(rf"{precision}\s+[\d.]+ MiB\s+[\d.]+ MiB", result.output), precision


def test_ledger_tops_up_meters_pays_out_and_verifies(viz, tmp_path) -> None:
    from viz.models.registry import ensure_builtin_models
    from viz.store import open_database, session_scope
    from worlds.ledger import add_adapter, add_document

    for name in ("ada", "bob"):
        assert viz("account", "create", name).exit_code == 0
    engine = open_database(f"sqlite:///{tmp_path / 'home' / 'viz.db'}")
    with session_scope(engine) as session:
        ensure_builtin_models(session)
        add_adapter(session, "qa", "ada", price_in=100, price_out=300)
        document_id = add_document(session, "ada", price_per_citation=500)
    engine.dispose()

    result = viz("ledger", "topup", "bob", "5000000", "--id", "invoice-1")
    assert result.exit_code == 0, result.output
    assert "balance: 5,000,000 (5.000000 units)" in result.output
    assert (
        "already recorded" in viz("ledger", "topup", "bob", "5000000", "--id", "invoice-1").output
    )

    result = viz(
        "ledger",
        "meter",
        "--consumer",
        "bob",
        "-a",
        "qa:0.5",
        "--tokens-in",
        "1000",
        "--tokens-out",
        "1000",
        "--cite",
        str(document_id),
        "--request-id",
        "req-1",
    )
    assert result.exit_code == 0, result.output
    assert "charged bob 700 (0.000700 units)" in result.output  # 0.5 x 400 + 500

    result = viz("ledger", "statement", "ada")
    assert "qa@1.0.0" in result.output and "earned:    630" in result.output

    result = viz("ledger", "payout", "ada", "--min", "100")
    assert result.exit_code == 0 and "paid ada 630" in result.output
    assert "nothing paid" in viz("ledger", "payout", "ada").output

    result = viz("ledger", "verify")
    assert result.exit_code == 0, result.output
    assert "ledger verified" in result.output and "1 usage events" in result.output
    assert "await their anchor" not in result.output  # the CLI's writes anchor at once
    assert "anchored already" in viz("ledger", "anchor").output

    result = viz("ledger", "history", "bob")
    assert "charge/single" in result.output and "topup/single" in result.output


def test_ledger_refusals_are_one_line_with_their_exit_code(viz) -> None:
    assert viz("account", "create", "bob").exit_code == 0
    for args, code, message in [
        (("ledger", "topup", "bob", "0"), 2, "positive"),
        (("ledger", "topup", "zed", "5"), 3, "no account named 'zed'"),
        (("ledger", "balance", "bob"), 3, "no ledger account yet"),
        (
            (
                "ledger",
                "meter",
                "--consumer",
                "bob",
                "--tokens-in",
                "9",
                "--tokens-out",
                "1000",
                "-a",
                "missing",
            ),
            3,
            "no adapter named 'missing'",
        ),
    ]:
        result = viz(*args)
        assert result.exit_code == code, (args, result.output)
        assert message in result.output and "Traceback" not in result.output
    assert viz("ledger", "topup", "bob", "10").exit_code == 0
    assert viz("ledger", "credit-limit", "bob", "-1").exit_code == 2


@pytest.mark.model
def test_ask_on_a_fresh_home_answers_without_a_reranker_and_says_how_to_train_one(viz) -> None:
    viz("account", "create", "ai2", "--kind", "firm")
    viz("documents", "add", str(PAPERS[0]), "--owner", "ai2", "--licence", "cc-by-4.0")
    indexed = viz("rag", "index", "papers", "--documents", "all")
    assert indexed.exit_code == 0, indexed.output

    asked = viz("ask", "What is this paper about?", "--collection", "papers", "--max-tokens", "8")

    assert asked.exit_code == 0, asked.output
    assert "Sources:" in asked.output
    assert "viz rag train-reranker --name minilm-qasper" in asked.output
