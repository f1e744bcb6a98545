"""Opening the database: one engine per URL, migrated to the newest schema on first use.

SQLite (the embedded default) runs in WAL mode with foreign keys on and a busy timeout, so the
CLI and a server can share one file. PostgreSQL is the same code by URL.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from viz.errors import InvalidInput, VizError

__all__ = [
    "open_database",
    "upgrade",
    "current_revision",
    "head_revision",
    "session_scope",
    "write_lock",
]

SQLITE_BUSY_TIMEOUT_MS = 5000
MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def open_database(url: str, *, upgrade_schema: bool = True) -> Engine:
    """Create an engine for `url`, creating the SQLite folder and upgrading the schema if behind.

    Raises:
        InvalidInput: the URL cannot be parsed or names an unknown driver.
        VizError: the server cannot be reached.
    """
    try:
        parsed = make_url(url)
    except ArgumentError as error:
        raise InvalidInput(
            f"database URL {url!r} cannot be parsed; use sqlite:///path/viz.db or "
            "postgresql+psycopg://user:password@host:5432/dbname"
        ) from error
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise InvalidInput(
            f"database URL {parsed.render_as_string(hide_password=True)!r} names backend "
            f"{parsed.get_backend_name()!r}; "
            "Viz supports sqlite and postgresql"
        )
    try:
        if parsed.get_backend_name() == "sqlite":
            engine = create_engine(parsed)
            event.listen(engine, "connect", _sqlite_on_connect)
        else:
            engine = create_engine(parsed, pool_pre_ping=True)
    except (ArgumentError, ImportError) as error:  # NoSuchModuleError is an ArgumentError
        raise InvalidInput(
            f"database URL {parsed.render_as_string(hide_password=True)!r} names driver "
            f"{parsed.drivername!r}, which is unknown or not installed; use sqlite:///path/viz.db "
            "or postgresql+psycopg://user:password@host:5432/dbname"
        ) from error
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    if upgrade_schema and current_revision(engine) != head_revision():
        upgrade(engine)
    return engine


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Run Alembic migrations up to `revision` on `engine`."""
    config = _alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def current_revision(engine: Engine) -> str | None:
    """The schema revision stored in the database, or None for an empty one."""
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    except OperationalError as error:
        raise VizError(
            f"cannot reach the database at {engine.url.render_as_string(hide_password=True)}: "
            f"{error.orig}; check VIZ_DATABASE_URL and that the server is running"
        ) from error


def head_revision() -> str:
    """The newest schema revision this version of Viz knows."""
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None
    return head


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session that commits when the block ends and rolls back if it raises."""
    session = sessionmaker(engine, expire_on_commit=False)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


_LOCK_STATEMENT = text("UPDATE write_locks SET generation = generation + 1 WHERE name = :name")


def write_lock(session: Session, name: str) -> None:
    """Serialise writers named `name` ("ledger", "log") until this transaction ends.

    Updating the lock's row is the lock: PostgreSQL queues the next writer on the row lock, and
    SQLite takes its database write lock here, so the reads that follow see every earlier commit
    and nobody else writes before this transaction does. Take "ledger" before "log", never after.
    """
    result = session.execute(_LOCK_STATEMENT, {"name": name})
    if result.rowcount == 0:  # type: ignore[attr-defined]
        raise VizError(f"write lock {name!r} is missing; run: viz db upgrade")


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def _sqlite_on_connect(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()
