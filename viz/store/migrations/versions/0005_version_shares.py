"""ledger: royalty shares of an adapter version (contributors of a merge, in basis points)

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "version_shares",
        sa.Column("adapter_version_id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("share_bps", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.CheckConstraint(
            "share_bps >= 1 AND share_bps <= 10000",
            name=op.f("ck_version_shares_share_bps_range"),
        ),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_version_shares_account_id_accounts")
        ),
        sa.ForeignKeyConstraint(
            ["adapter_version_id"],
            ["adapter_versions.id"],
            name=op.f("fk_version_shares_adapter_version_id_adapter_versions"),
        ),
        sa.PrimaryKeyConstraint("adapter_version_id", "account_id", name=op.f("pk_version_shares")),
    )


def downgrade() -> None:
    op.drop_table("version_shares")
