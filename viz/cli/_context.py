"""What every command shares: the settings read once at the entry point, and the database."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import typer
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from viz.config import Settings
from viz.store.database import open_database, session_scope


@dataclass
class CliState:
    settings: Settings
    _engine: Engine | None = field(default=None, repr=False)

    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = open_database(self.settings.database_url_resolved)
        return self._engine


def state(context: typer.Context) -> CliState:
    root = context.find_root()
    assert isinstance(root.obj, CliState), "the root callback sets the CLI state"
    return root.obj


@contextmanager
def session(context: typer.Context) -> Iterator[Session]:
    """A database session that commits when the command's block ends."""
    with session_scope(state(context).engine()) as database_session:
        yield database_session


def table(rows: list[list[str]], header: list[str]) -> str:
    """Plain left-aligned columns (stable in pipes and tests, unlike a boxed table)."""
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in [header, *rows]
    ]
    return "\n".join(line.rstrip() for line in lines)
