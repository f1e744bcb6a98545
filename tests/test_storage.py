"""Storage: the catalogue on SQLite and PostgreSQL, through what a user does with it.

Every test that takes `engine` runs twice: on a fresh SQLite file and on a fresh PostgreSQL
schema (see tests/conftest.py; `scripts/postgres-test-server` starts the server).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, func, select, text
from sqlalchemy.exc import IntegrityError

import viz.store.database
from viz.accounts import (
    authenticate,
    create_account,
    create_api_key,
    get_account,
    list_api_keys,
    revoke_api_key,
)
from viz.documents import DocumentInput, add_documents, list_documents, read_document_text
from viz.errors import (
    Conflict,
    InvalidInput,
    LimitExceeded,
    NotFound,
    Unauthenticated,
    VizError,
)
from viz.store import (
    blob_path,
    current_revision,
    head_revision,
    open_database,
    session_scope,
    sha256_bytes,
)
from viz.store.schema import Account, ApiKey, Base, Document, DocumentTag

QASPER_PAPERS = Path(__file__).resolve().parents[2] / "shared" / "data" / "qasper-dev" / "papers"
BYTES_MAX = 1024 * 1024
FILES_MAX = 100


@pytest.fixture
def blobs(tmp_path: Path) -> Path:
    return tmp_path / "blobs"


@pytest.fixture
def ada(engine: Engine) -> Account:
    with session_scope(engine) as session:
        return create_account(session, "ada-lovelace", display_name="Ada Lovelace")


def write(folder: Path, name: str, content: str | bytes) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def add(
    engine: Engine,
    blobs: Path,
    owner: Account,
    paths: list[Path],
    licence: str = "CC-BY-4.0",
    tags: tuple[str, ...] = (),
    document_bytes_max: int = BYTES_MAX,
    skip_existing: bool = False,
) -> tuple[list[Document], list[Document]]:
    """Add `paths` for `owner` in one transaction, as `viz documents add` does."""
    with session_scope(engine) as session:
        return add_documents(
            session,
            blobs,
            owner,
            paths,
            DocumentInput(licence=licence, attribution="Ada Lovelace, 1843", tags=tags),
            document_bytes_max=document_bytes_max,
            documents_max=FILES_MAX,
            skip_existing=skip_existing,
        )


def count(engine: Engine, table: type[Base]) -> int:
    with session_scope(engine) as session:
        return session.scalar(select(func.count()).select_from(table)) or 0


def blob_files(blobs: Path) -> list[Path]:
    return [path for path in blobs.rglob("*") if path.is_file()] if blobs.exists() else []


# --- The database itself ----------------------------------------------------------------------


def test_migrations_build_exactly_the_orm_schema(engine: Engine) -> None:
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []
    assert current_revision(engine) == head_revision()


def test_a_fresh_sqlite_file_runs_in_wal_mode_with_foreign_keys_on(tmp_path: Path) -> None:
    engine = open_database(f"sqlite:///{tmp_path / 'new' / 'viz.db'}")
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert (connection.exec_driver_sql("PRAGMA busy_timeout").scalar() or 0) > 0
    assert current_revision(engine) == head_revision()
    engine.dispose()


def test_reopening_an_upgraded_database_does_not_migrate_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'viz.db'}"
    open_database(url).dispose()

    def no_migrations(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("open_database migrated a database that is already at head")

    monkeypatch.setattr(viz.store.database, "upgrade", no_migrations)
    engine = open_database(url)
    assert current_revision(engine) == head_revision()
    engine.dispose()


@pytest.mark.parametrize(
    "url",
    ["nosuchdb://x", "not a url", "", "postgresql+nosuchdriver://u@h/db", "sqlite+nosuch:///x.db"],
)
def test_a_bad_database_url_is_invalid_input(url: str) -> None:
    with pytest.raises(InvalidInput, match="database URL"):
        open_database(url)


def test_an_unreachable_server_says_what_to_check() -> None:
    with pytest.raises(VizError, match="cannot reach the database") as caught:
        open_database("postgresql+psycopg://viz:secret@127.0.0.1:1/viz_test")
    assert "VIZ_DATABASE_URL" in caught.value.message
    assert "secret" not in caught.value.message


def test_foreign_keys_are_enforced(engine: Engine) -> None:
    with pytest.raises(IntegrityError), session_scope(engine) as session:
        session.add(ApiKey(key_id="0" * 16, account_id=424242, secret_sha256="0" * 64))
    assert count(engine, ApiKey) == 0


# --- Accounts ---------------------------------------------------------------------------------


def test_an_account_is_created_once_and_found_by_name(engine: Engine) -> None:
    with session_scope(engine) as session:
        create_account(session, "ada-lovelace", kind="person", display_name="Ada Lovelace")
        create_account(session, "analytical.engines", kind="firm")

    with session_scope(engine) as session:
        ada = get_account(session, "ada-lovelace")
        firm = get_account(session, "analytical.engines")
    assert (ada.kind, ada.display_name, ada.is_admin) == ("person", "Ada Lovelace", False)
    assert (firm.kind, firm.display_name) == ("firm", "analytical.engines")
    assert ada.created_at is not None

    with pytest.raises(Conflict, match="already exists"), session_scope(engine) as session:
        create_account(session, "ada-lovelace")
    assert count(engine, Account) == 2


def test_a_malformed_account_name_is_invalid_input(engine: Engine) -> None:
    for name in ["Ada", "ab", "-ada", "ada lovelace", "x" * 65]:
        with pytest.raises(InvalidInput, match="not valid"), session_scope(engine) as session:
            create_account(session, name)
    with pytest.raises(InvalidInput, match="kind"), session_scope(engine) as session:
        create_account(session, "ada-lovelace", kind="robot")
    assert count(engine, Account) == 0


def test_an_unknown_account_says_how_to_create_it(engine: Engine) -> None:
    with pytest.raises(NotFound) as caught, session_scope(engine) as session:
        get_account(session, "grace-hopper")
    assert "viz account create grace-hopper" in caught.value.message


# --- API keys ---------------------------------------------------------------------------------


def test_an_api_key_is_shown_once_and_only_its_digest_is_stored(
    engine: Engine, ada: Account
) -> None:
    with session_scope(engine) as session:
        key = create_api_key(session, ada, label="laptop")
    match = re.fullmatch(r"viz_([0-9a-f]{16})_([0-9a-f]{64})", key.token)
    assert match is not None
    key_id, secret = match.groups()
    assert key_id == key.key_id

    with engine.connect() as connection:
        row = connection.execute(text("SELECT * FROM api_keys")).mappings().one()
    stored = " ".join(str(value) for value in row.values())
    assert secret not in stored
    assert row["secret_sha256"] == sha256_bytes(secret.encode())
    assert row["label"] == "laptop"

    with session_scope(engine) as session:
        assert authenticate(session, key.token).name == "ada-lovelace"
        assert authenticate(session, f"  {key.token}\n").name == "ada-lovelace"
    with session_scope(engine) as session:
        assert list_api_keys(session, ada)[0].last_used_at is not None


def test_a_wrong_revoked_or_malformed_key_is_not_accepted(engine: Engine, ada: Account) -> None:
    with session_scope(engine) as session:
        key = create_api_key(session, ada)
    one_char_off = key.token[:-1] + ("0" if key.token[-1] != "0" else "1")
    unknown_id = f"viz_{'f' * 16}_{key.token[-64:]}"
    for token in (one_char_off, unknown_id):
        with pytest.raises(Unauthenticated, match="not accepted"), session_scope(engine) as s:
            authenticate(s, token)
    for token in ("", "viz_123_456", key.token.upper(), "Bearer " + key.token):
        with pytest.raises(Unauthenticated, match="malformed"), session_scope(engine) as s:
            authenticate(s, token)

    with session_scope(engine) as session:
        assert revoke_api_key(session, key.key_id, account=ada).revoked_at is not None
    with pytest.raises(Unauthenticated, match="not accepted"), session_scope(engine) as session:
        authenticate(session, key.token)
    with pytest.raises(Conflict, match="already revoked"), session_scope(engine) as session:
        revoke_api_key(session, key.key_id)
    with pytest.raises(NotFound, match="viz keys list"), session_scope(engine) as session:
        revoke_api_key(session, "0123456789abcdef")


def test_a_key_can_only_be_revoked_by_its_own_account(engine: Engine, ada: Account) -> None:
    with session_scope(engine) as session:
        grace = create_account(session, "grace-hopper")
        key = create_api_key(session, ada)
    with pytest.raises(NotFound), session_scope(engine) as session:
        revoke_api_key(session, key.key_id, account=grace)
    with session_scope(engine) as session:
        assert authenticate(session, key.token).name == "ada-lovelace"


def test_an_account_holds_at_most_keys_max_active_keys(engine: Engine, ada: Account) -> None:
    with session_scope(engine) as session:
        first = create_api_key(session, ada, keys_max=2)
        create_api_key(session, ada, keys_max=2)
    with pytest.raises(LimitExceeded, match="viz keys revoke"), session_scope(engine) as session:
        create_api_key(session, ada, keys_max=2)
    assert count(engine, ApiKey) == 2

    with session_scope(engine) as session:
        revoke_api_key(session, first.key_id)
        create_api_key(session, ada, keys_max=2)  # a revoked key frees its place
    assert count(engine, ApiKey) == 3


# --- Documents --------------------------------------------------------------------------------


def test_adding_a_document_stores_it_content_addressed(
    engine: Engine, ada: Account, blobs: Path, tmp_path: Path
) -> None:
    content = "# On the Analytical Engine\n\nIt weaves algebraical patterns.\n"
    path = write(tmp_path / "in", "notes.md", content)

    added, skipped = add(engine, blobs, ada, [path], licence="cc-by-4.0", tags=("nlp", "history"))

    assert skipped == []
    with session_scope(engine) as session:
        (document,) = list_documents(session)
        assert document.id == added[0].id
        assert document.sha256 == sha256_bytes(content.encode())
        assert document.size_bytes == len(content.encode())
        assert document.licence == "CC-BY-4.0"
        assert document.title == "On the Analytical Engine"
        assert (document.filename, document.media_type) == ("notes.md", "text/markdown")
        assert document.attribution == "Ada Lovelace, 1843"
        assert (document.ai_training, document.ai_inference) == ("allowed", "allowed")
        assert [tag.tag for tag in document.tags] == ["history", "nlp"]
        assert document.owner.name == "ada-lovelace"
    assert blob_files(blobs) == [blob_path(blobs, document.sha256)]
    assert read_document_text(blobs, document) == content


def test_real_papers_are_ingested_and_read_back(engine: Engine, ada: Account, blobs: Path) -> None:
    papers = [QASPER_PAPERS / "1503.00841.txt", QASPER_PAPERS / "1910.05603.txt"]
    if not all(paper.is_file() for paper in papers):
        pytest.skip(f"QASPER papers not found under {QASPER_PAPERS}")

    added, _ = add(engine, blobs, ada, papers, tags=("qasper",))

    assert [document.title for document in added] == [
        "Robustly Leveraging Prior Knowledge in Text Classification",
        "VAIS ASR: Building a conversational speech recognition system using language model "
        "combination",
    ]
    for paper, document in zip(papers, added, strict=True):
        assert document.size_bytes == paper.stat().st_size
        assert read_document_text(blobs, document) == paper.read_text(encoding="utf-8")
    assert len(blob_files(blobs)) == 2


def test_a_duplicate_is_refused_unless_skipped(
    engine: Engine, ada: Account, blobs: Path, tmp_path: Path
) -> None:
    first = write(tmp_path / "in", "a.txt", "First text.\n")
    add(engine, blobs, ada, [first])
    copy = write(tmp_path / "elsewhere", "copy-of-a.txt", "First text.\n")
    new = write(tmp_path / "in", "b.txt", "Second text.\n")

    with pytest.raises(Conflict, match="already catalogued") as caught:
        add(engine, blobs, ada, [new, copy])
    assert "nothing was added" in caught.value.message
    assert count(engine, Document) == 1
    assert len(blob_files(blobs)) == 1

    added, skipped = add(engine, blobs, ada, [new, copy], skip_existing=True)
    assert [document.filename for document in added] == ["b.txt"]
    assert [document.filename for document in skipped] == ["a.txt"]
    assert count(engine, Document) == 2
    assert len(blob_files(blobs)) == 2


def test_the_same_content_twice_in_one_call_is_stored_once(
    engine: Engine, ada: Account, blobs: Path, tmp_path: Path
) -> None:
    paths = [write(tmp_path, name, "Same words.\n") for name in ("one.txt", "two.txt")]
    added, skipped = add(engine, blobs, ada, paths)
    assert ([d.filename for d in added], skipped) == (["one.txt"], [])
    assert count(engine, Document) == 1


def test_an_unknown_licence_suggests_the_right_one_and_stores_nothing(
    engine: Engine, ada: Account, blobs: Path, tmp_path: Path
) -> None:
    path = write(tmp_path, "a.txt", "Some text.\n")
    with pytest.raises(InvalidInput) as caught:
        add(engine, blobs, ada, [path], licence="CC-BY-4.1")
    assert "CC-BY-4.0" in caught.value.message
    assert count(engine, Document) == 0
    assert count(engine, DocumentTag) == 0
    assert blob_files(blobs) == []


def test_one_binary_file_stops_the_whole_call(
    engine: Engine, ada: Account, blobs: Path, tmp_path: Path
) -> None:
    good = write(tmp_path, "good.txt", "Plain, honest text.\n")
    binary = write(tmp_path, "image.txt", b"\x89PNG\r\n\x1a\n\xff\xfe\x00\x00")
    with pytest.raises(InvalidInput, match="not UTF-8") as caught:
        add(engine, blobs, ada, [good, binary], tags=("nlp",))
    assert "image.txt" in caught.value.message
    assert "good.txt" not in caught.value.message
    assert count(engine, Document) == 0
    assert count(engine, DocumentTag) == 0
    assert blob_files(blobs) == []


def test_files_that_are_not_text_are_invalid_input(
    engine: Engine, ada: Account, blobs: Path, tmp_path: Path
) -> None:
    for name, content, message in [
        ("nul.txt", "text\x00more", "NUL"),
        ("blank.txt", " \n\t\n", "empty"),
        ("paper.docx", "PK\x03\x04", "unsupported file type"),
        ("paper.pdf", "%PDF-1.7", "damaged PDF"),
    ]:
        with pytest.raises(InvalidInput, match=message):
            add(engine, blobs, ada, [write(tmp_path, name, content)])
    with pytest.raises(InvalidInput, match="no such file"):
        add(engine, blobs, ada, [tmp_path / "missing.txt"])
    assert count(engine, Document) == 0
    assert blob_files(blobs) == []


def test_a_file_over_the_size_limit_is_refused(
    engine: Engine, ada: Account, blobs: Path, tmp_path: Path
) -> None:
    small = write(tmp_path, "small.txt", "short\n")
    big = write(tmp_path, "big.txt", "x" * 101)
    with pytest.raises(LimitExceeded, match="big.txt: 101 bytes is over the 100-byte limit"):
        add(engine, blobs, ada, [small, big], document_bytes_max=100)
    assert count(engine, Document) == 0
    assert blob_files(blobs) == []


def test_documents_are_listed_by_tag_and_by_owner(
    engine: Engine, ada: Account, blobs: Path, tmp_path: Path
) -> None:
    with session_scope(engine) as session:
        grace = create_account(session, "grace-hopper")
    add(engine, blobs, ada, [write(tmp_path, "engine.txt", "Engines.\n")], tags=("history",))
    add(engine, blobs, ada, [write(tmp_path, "poems.md", "Poetical science.\n")], tags=("poetry",))
    add(
        engine,
        blobs,
        grace,
        [write(tmp_path, "cobol.txt", "COBOL.\n")],
        tags=("history", "lang:en"),
    )

    with session_scope(engine) as session:
        by_tag = list_documents(session, tag="history")
        by_ada = list_documents(session, owner=ada)
        by_grace_and_tag = list_documents(session, owner=grace, tag="poetry")
        everything = list_documents(session)
    assert [d.filename for d in by_tag] == ["engine.txt", "cobol.txt"]
    assert [d.filename for d in by_ada] == ["engine.txt", "poems.md"]
    assert by_grace_and_tag == []
    assert [(d.filename, d.owner.name) for d in everything] == [
        ("engine.txt", "ada-lovelace"),
        ("poems.md", "ada-lovelace"),
        ("cobol.txt", "grace-hopper"),
    ]
