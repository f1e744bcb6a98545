"""The marketplace: publish (plain PEFT too), screening of malicious uploads, search, takedown,
and the log that records it all. Catalogue tests run on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from sqlalchemy import func, select

from viz.accounts import create_account
from viz.errors import Conflict, Forbidden, InvalidInput, NotFound
from viz.log.store import (
    export_log,
    prove_consistency,
    prove_entry,
    verify_export,
    verify_proof,
)
from viz.market.catalogue import (
    PublishRequest,
    approve_version,
    find_version,
    publish_adapter,
    restore_version,
    search_adapters,
    takedown_version,
)
from viz.market.hierarchy import PARENT_DEPTH_MAX, ancestors
from viz.models import add_base_model
from viz.store import session_scope
from viz.store.schema import Account, Adapter, AdapterVersion, LogEntry
from worlds.catalogue import add_tiny_base
from worlds.catalogue import make_tiny_adapter as make_adapter


@pytest.fixture
def market(engine, tmp_path, tiny_model_folder):  # type: ignore[no-untyped-def]
    """A catalogue with creators ada and bob, admin root, and the tiny base registered."""
    with session_scope(engine) as session:
        create_account(session, "ada")
        create_account(session, "bob")
        create_account(session, "root", is_admin=True)
        add_tiny_base(session, tiny_model_folder)
    return {
        "engine": engine,
        "blobs": tmp_path / "blobs",
        "models": tmp_path / "models",
        "tmp": tmp_path,
        "base": tiny_model_folder,
    }


def publish(market, folder, owner="ada", **fields):  # type: ignore[no-untyped-def]
    request = PublishRequest(
        **{
            "name": "tiny-qa",
            "version": "1.0.0",
            "licence": "MIT",
            "price_in_micro": 10,
            "price_out_micro": 20,
            "base_id": "tiny",
            **fields,
        }
    )
    from viz.accounts import get_account

    with session_scope(market["engine"]) as session:
        version, report = publish_adapter(
            session,
            market["blobs"],
            market["models"],
            folder,
            request,
            owner=get_account(session, owner),
        )
        return version.status, report


def counts(market) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    with session_scope(market["engine"]) as session:
        versions = session.scalar(select(func.count()).select_from(AdapterVersion))
        entries = session.scalar(select(func.count()).select_from(LogEntry))
    return versions, entries


def test_a_plain_peft_adapter_is_published_and_found(market) -> None:
    folder = make_adapter(market["base"], market["tmp"] / "plain", seed=1)

    status, report = publish(market, folder, tags=("nlp",))

    assert status == "approved", report.problems()
    assert [c.stage for c in report.checks][-1] == "canary"
    with session_scope(market["engine"]) as session:
        found = search_adapters(session, text="tiny", tags=("nlp",), price_out_max_micro=20)
        assert [v.adapter.name for v in found] == ["tiny-qa"]
        assert search_adapters(session, price_out_max_micro=19) == []
        assert search_adapters(session, licence="Apache-2.0") == []
    assert counts(market) == (1, 1)


def test_versions_are_immutable_and_names_belong_to_their_creator(market) -> None:
    folder = make_adapter(market["base"], market["tmp"] / "plain", seed=1)
    publish(market, folder)

    with pytest.raises(Conflict, match="immutable"):
        publish(market, folder)
    with pytest.raises(Forbidden, match="belongs to ada"):
        publish(market, folder, owner="bob", version="1.0.1")
    with pytest.raises(InvalidInput) as raised:
        publish(market, folder, version="v1", licence="MIT-9", price_in_micro=-1)
    assert all(word in raised.value.message for word in ("semver", "MIT", "--price-in"))
    with pytest.raises(NotFound):
        publish(market, folder, name="child", parent="nope")
    assert publish(market, folder, version="1.1.0")[0] == "approved"
    with session_scope(market["engine"]) as session:
        assert find_version(session, "tiny-qa").version == "1.1.0"


def test_a_parent_chain_cannot_loop(market) -> None:
    first = make_adapter(market["base"], market["tmp"] / "a", seed=1)
    second = make_adapter(market["base"], market["tmp"] / "b", seed=2)
    publish(market, first, name="general")
    publish(market, second, name="domain", parent="general")

    with pytest.raises(Conflict, match="cycle"):
        publish(market, first, name="general", version="1.0.1", parent="domain")


def test_publishing_refuses_a_chain_deeper_than_serving_applies(market) -> None:
    """hop0 <- hop1 <- ... <- hop8: hop8 has PARENT_DEPTH_MAX ancestors, so a child of hop8
    would have one more than serving applies; a child of hop7 is at the limit and is published."""
    with session_scope(market["engine"]) as session:
        ada = session.scalar(select(Account).where(Account.name == "ada"))
        parent = None
        for i in range(PARENT_DEPTH_MAX + 1):
            parent = Adapter(
                name=f"hop{i}", owner=ada, base_id="tiny", visibility="public", parent=parent
            )
            session.add(parent)
    folder = make_adapter(market["base"], market["tmp"] / "deep", seed=5)
    before = counts(market)

    with pytest.raises(InvalidInput) as refused:
        publish(market, folder, name="too-deep", parent=f"hop{PARENT_DEPTH_MAX}")
    message = refused.value.message
    assert (
        f"{PARENT_DEPTH_MAX + 1} ancestors" in message and f"at most {PARENT_DEPTH_MAX}" in message
    )
    assert counts(market) == before

    assert publish(market, folder, name="deepest", parent=f"hop{PARENT_DEPTH_MAX - 1}")[0] == (
        "approved"
    )
    with session_scope(market["engine"]) as session:
        deepest = session.scalar(select(Adapter).where(Adapter.name == "deepest"))
        assert len(ancestors(deepest)) == PARENT_DEPTH_MAX
    # Re-parenting the root under another adapter would push "deepest" past the limit.
    publish(market, make_adapter(market["base"], market["tmp"] / "top", seed=6), name="top")
    with pytest.raises(InvalidInput, match="below it"):
        publish(market, folder, name="hop0", version="1.0.1", parent="top")


def test_a_parent_must_adapt_the_same_base(market, tiny_model_folder) -> None:
    with session_scope(market["engine"]) as session:
        add_base_model(
            session, str(tiny_model_folder), model_id="tiny-twin", licence="MIT",
            provenance_class="unknown",
        )  # fmt: skip
    parent = make_adapter(market["base"], market["tmp"] / "p", seed=3)
    publish(market, parent, name="twin-general", base_id="tiny-twin")
    child = make_adapter(market["base"], market["tmp"] / "c", seed=4)
    with pytest.raises(InvalidInput, match="is on base tiny-twin, not tiny"):
        publish(market, child, name="tiny-child", parent="twin-general")


# --- malicious uploads: every one refused (nothing stored) or flagged -------------------------


def _pickle(folder: Path) -> None:
    (folder / "adapter_model.bin").write_bytes(b"\x80\x04\x95 pickle bytes, never loaded")


def _pickle_named_safetensors(folder: Path) -> None:
    (folder / "adapter_model.safetensors").write_bytes(b"\x80\x04\x95" + bytes(64))


def _polyglot(folder: Path) -> None:
    with (folder / "adapter_model.safetensors").open("ab") as file:
        file.write(b"PK\x03\x04 a zip archive hidden after the tensors")


def _oversized_header(folder: Path) -> None:
    path = folder / "adapter_model.safetensors"
    data = path.read_bytes()
    path.write_bytes(struct.pack("<Q", 50 * 1024 * 1024) + data[8:])


def _overlapping_offsets(folder: Path) -> None:
    path = folder / "adapter_model.safetensors"
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    names = sorted(n for n in header if n != "__metadata__")
    header[names[1]]["data_offsets"] = header[names[0]]["data_offsets"]
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + length :])


def _nan(folder: Path) -> None:
    path = folder / "adapter_model.safetensors"
    tensors = load_file(path)
    first = sorted(tensors)[0]
    tensors[first][0, 0] = float("nan")
    save_file(tensors, path)


def _wrong_shapes(folder: Path) -> None:
    path = folder / "adapter_model.safetensors"
    tensors = load_file(path)
    first = next(n for n in sorted(tensors) if "lora_A" in n)
    tensors[first] = torch.zeros(4, 17)
    save_file(tensors, path)


def _wrong_base(folder: Path) -> None:
    manifest = {"base": {"id": "tiny", "weights_sha256": "0" * 64}}
    (folder / "viz-manifest.json").write_text(json.dumps(manifest))


def _huge_rank(folder: Path) -> None:
    config = json.loads((folder / "adapter_config.json").read_text())
    config["r"] = 100_000
    (folder / "adapter_config.json").write_text(json.dumps(config))


MALICIOUS = {
    "pickle file": (_pickle, "pickled weights are refused"),
    "pickle named .safetensors": (_pickle_named_safetensors, "contains a pickle"),
    "polyglot": (_polyglot, "after the last tensor"),
    "oversized header": (_oversized_header, "header of"),
    "overlapping tensors": (_overlapping_offsets, "overlaps"),
    "NaN": (_nan, "non-finite"),
    "wrong shapes": (_wrong_shapes, "shape"),
    "wrong base": (_wrong_base, "publish it for the base it was trained on"),
    "rank over the limit": (_huge_rank, "rank"),
}


@pytest.mark.parametrize("attack", sorted(MALICIOUS))
def test_a_malicious_upload_is_refused_and_nothing_is_stored(market, attack: str) -> None:
    folder = make_adapter(market["base"], market["tmp"] / "evil", seed=3)
    tamper, expected = MALICIOUS[attack]
    tamper(folder)

    with pytest.raises(InvalidInput) as raised:
        publish(market, folder)

    assert expected in raised.value.message
    assert counts(market) == (0, 0)
    assert not (market["blobs"]).exists() or not any(market["blobs"].rglob("*"))


def test_a_near_duplicate_by_another_creator_is_held_for_review(market) -> None:
    original = make_adapter(market["base"], market["tmp"] / "original", seed=4)
    copy = market["tmp"] / "copy"
    shutil.copytree(original, copy)
    tensors = load_file(copy / "adapter_model.safetensors")
    for name in tensors:  # the update B @ A is unchanged when A is scaled up and B down
        tensors[name] = tensors[name] * (2.0 if "lora_A" in name else 0.5)
    save_file(tensors, copy / "adapter_model.safetensors")
    publish(market, original)

    status, report = publish(market, copy, owner="bob", name="not-a-copy")

    assert status == "pending"
    assert any("re-upload" in problem for problem in report.problems())
    with session_scope(market["engine"]) as session:
        assert [v.adapter.name for v in search_adapters(session)] == ["tiny-qa"]
        with pytest.raises(Forbidden):
            approve_version(session, "not-a-copy", by=_account(session, "bob"))
        approve_version(session, "not-a-copy", by=_account(session, "root"))
        assert len(search_adapters(session)) == 2


def test_takedown_and_restore_keep_history_and_the_log_verifies(market, tmp_path) -> None:
    publish(market, make_adapter(market["base"], market["tmp"] / "a", seed=5))
    with session_scope(market["engine"]) as session:
        with pytest.raises(Forbidden):
            takedown_version(
                session, "tiny-qa@1.0.0", reason="r", notice_from="n", by=_account(session, "bob")
            )
        takedown_version(
            session,
            "tiny-qa@1.0.0",
            reason="licence dispute",
            notice_from="a rights holder",
            by=_account(session, "root"),
        )
        assert search_adapters(session) == []
        restore_version(
            session, "tiny-qa@1.0.0", reason="counter-notice", by=_account(session, "root")
        )
        assert len(search_adapters(session)) == 1
        checkpoint = export_log(session, tmp_path / "log.json", tmp_path / "key.pem")
        inclusion = prove_entry(session, 1, tmp_path / "key.pem")
        consistency = prove_consistency(session, 1, tmp_path / "key.pem")

    verify_proof(inclusion, trusted_public_key=checkpoint.public_key)
    verify_proof(consistency, trusted_public_key=checkpoint.public_key)
    assert '"kind":"takedown"' in inclusion["data"]
    forged = {**inclusion, "data": inclusion["data"].replace("dispute", "x")}
    with pytest.raises(InvalidInput):
        verify_proof(forged)
    with pytest.raises(InvalidInput):
        verify_proof(consistency, trusted_public_key="c29tZW9uZSBlbHNl")

    assert checkpoint.size == 3
    assert verify_export(tmp_path / "log.json").root == checkpoint.root
    exported = json.loads((tmp_path / "log.json").read_text())
    exported["entries"][1]["data"] = exported["entries"][1]["data"].replace("dispute", "x")
    (tmp_path / "tampered.json").write_text(json.dumps(exported))
    with pytest.raises(InvalidInput, match="altered"):
        verify_export(tmp_path / "tampered.json")


def _account(session, name):  # type: ignore[no-untyped-def]
    from viz.accounts import get_account

    return get_account(session, name)


def test_a_document_is_listed_by_its_owner_with_a_price_per_citation(market) -> None:
    from viz.documents import DocumentInput, add_documents
    from viz.market.listings import list_document
    from worlds.catalogue import QASPER_PAPERS

    papers = sorted(QASPER_PAPERS.glob("*.txt"))[:2]
    with session_scope(market["engine"]) as session:
        ada = _account(session, "ada")
        limits = {"document_bytes_max": 10**8, "documents_max": 10}
        add_documents(
            session, market["blobs"], ada, papers[:1], DocumentInput("CC-BY-4.0"), **limits
        )
        add_documents(
            session,
            market["blobs"],
            ada,
            papers[1:],
            DocumentInput("CC-BY-4.0", ai_inference="notAllowed"),
            **limits,
        )

        listing = list_document(session, 1, price_per_citation_micro=500, by=ada)
        assert listing.price_per_citation_micro == 500
        with pytest.raises(Forbidden, match="belongs to ada"):
            list_document(session, 1, price_per_citation_micro=1, by=_account(session, "bob"))
        with pytest.raises(Forbidden, match="ai_inference"):
            list_document(session, 2, price_per_citation_micro=1, by=ada)
        with pytest.raises(InvalidInput):
            list_document(session, 1, price_per_citation_micro=-1, by=ada)
    assert counts(market)[1] == 1
