"""Alembic environment: Viz passes its own connection in `config.attributes["connection"]`.

Run through `viz db upgrade` (or automatically on first use), not the `alembic` command.
"""

from alembic import context

from viz.store.schema import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
