"""gateway: a request in flight records when its answer was delivered (settled after it)

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("requests_in_flight") as table:
        table.add_column(sa.Column("delivered_at_us", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("requests_in_flight") as table:
        table.drop_column("delivered_at_us")
