"""routing: a domain profile per adapter version (embedding centroid, what it was built from)

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("adapter_versions") as table:
        table.add_column(sa.Column("profile", sa.LargeBinary(), nullable=True))
        table.add_column(sa.Column("profile_source", sa.Text(), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("adapter_versions") as table:
        table.drop_column("profile_source")
        table.drop_column("profile")
