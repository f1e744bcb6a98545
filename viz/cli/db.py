"""`viz db`: the schema (upgrades also run automatically on first use)."""

from __future__ import annotations

import typer

from viz.cli._context import state
from viz.store.database import current_revision, head_revision, open_database, upgrade

app = typer.Typer(help="Database schema: upgrade and status.\n\nExample: viz db upgrade")


@app.command("upgrade")
def upgrade_(context: typer.Context) -> None:
    """Migrate the database to the newest schema (safe to run twice).

    Example: viz db upgrade  (on PostgreSQL: VIZ_DATABASE_URL=postgresql+psycopg://... first)
    """
    settings = state(context).settings
    engine = open_database(settings.database_url_resolved, upgrade_schema=False)
    before = current_revision(engine)
    upgrade(engine)
    after = current_revision(engine)
    url = engine.url.render_as_string(hide_password=True)
    engine.dispose()
    if before == after:
        typer.echo(f"{url}: already at revision {after}")
    else:
        typer.echo(f"{url}: upgraded from {before or 'empty'} to {after}")


@app.command("status")
def status(context: typer.Context) -> None:
    """Show the database URL and its schema revision.

    Example: viz db status
    """
    settings = state(context).settings
    engine = open_database(settings.database_url_resolved, upgrade_schema=False)
    current = current_revision(engine)
    typer.echo(f"database: {engine.url.render_as_string(hide_password=True)}")
    typer.echo(f"revision: {current or 'empty'} (newest: {head_revision()})")
    engine.dispose()
