"""market: adapters, versions, takedowns, listings, log

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


# Over 70 lines on purpose: a migration is one DDL script, read top to bottom against the
# schema it creates; split into helpers it would hide the order the tables are created in.
def upgrade() -> None:
    op.create_table(
        "log_entries",
        sa.Column("index", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("leaf_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("index", name=op.f("pk_log_entries")),
    )
    op.create_table(
        "adapters",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=False),
        sa.Column("base_id", sa.String(length=100), nullable=False),
        sa.Column("parent_id", sa.Integer(), nullable=True),
        sa.Column("visibility", sa.String(length=16), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["base_id"], ["base_models.id"], name=op.f("fk_adapters_base_id_base_models")
        ),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["accounts.id"], name=op.f("fk_adapters_owner_id_accounts")
        ),
        sa.ForeignKeyConstraint(
            ["parent_id"], ["adapters.id"], name=op.f("fk_adapters_parent_id_adapters")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_adapters")),
        sa.UniqueConstraint("name", name=op.f("uq_adapters_name")),
    )
    with op.batch_alter_table("adapters", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_adapters_base_id"), ["base_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_adapters_owner_id"), ["owner_id"], unique=False)

    op.create_table(
        "adapter_tags",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("adapter_id", sa.Integer(), nullable=False),
        sa.Column("tag", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["adapter_id"], ["adapters.id"], name=op.f("fk_adapter_tags_adapter_id_adapters")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_adapter_tags")),
        sa.UniqueConstraint("adapter_id", "tag", name=op.f("uq_adapter_tags_adapter_id")),
    )
    with op.batch_alter_table("adapter_tags", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_adapter_tags_adapter_id"), ["adapter_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_adapter_tags_tag"), ["tag"], unique=False)

    op.create_table(
        "adapter_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("adapter_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("licence", sa.String(length=500), nullable=False),
        sa.Column("price_in_micro", sa.BigInteger(), nullable=False),
        sa.Column("price_out_micro", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("weights_sha256", sa.String(length=64), nullable=False),
        sa.Column("config_json", sa.Text(), nullable=False),
        sa.Column("manifest_json", sa.Text(), nullable=False),
        sa.Column("card", sa.Text(), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("update_norm", sa.Float(), nullable=False),
        sa.Column("sketch", sa.LargeBinary(), nullable=False),
        sa.Column("screening_json", sa.Text(), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["adapter_id"], ["adapters.id"], name=op.f("fk_adapter_versions_adapter_id_adapters")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_adapter_versions")),
        sa.UniqueConstraint("adapter_id", "version", name=op.f("uq_adapter_versions_adapter_id")),
    )
    with op.batch_alter_table("adapter_versions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_adapter_versions_adapter_id"), ["adapter_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_adapter_versions_weights_sha256"), ["weights_sha256"], unique=False
        )

    op.create_table(
        "document_listings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("document_id", sa.Integer(), nullable=False),
        sa.Column("price_per_citation_micro", sa.BigInteger(), nullable=False),
        sa.Column("listed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["document_id"],
            ["documents.id"],
            name=op.f("fk_document_listings_document_id_documents"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_document_listings")),
        sa.UniqueConstraint("document_id", name=op.f("uq_document_listings_document_id")),
    )
    op.create_table(
        "takedowns",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("notice_from", sa.String(length=500), nullable=False),
        sa.Column("by_account_id", sa.Integer(), nullable=False),
        sa.Column("status_before", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("restored_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("restore_reason", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["by_account_id"], ["accounts.id"], name=op.f("fk_takedowns_by_account_id_accounts")
        ),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["adapter_versions.id"],
            name=op.f("fk_takedowns_version_id_adapter_versions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_takedowns")),
    )
    with op.batch_alter_table("takedowns", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_takedowns_version_id"), ["version_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("takedowns", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_takedowns_version_id"))

    op.drop_table("takedowns")
    op.drop_table("document_listings")
    with op.batch_alter_table("adapter_versions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_adapter_versions_weights_sha256"))
        batch_op.drop_index(batch_op.f("ix_adapter_versions_adapter_id"))

    op.drop_table("adapter_versions")
    with op.batch_alter_table("adapter_tags", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_adapter_tags_tag"))
        batch_op.drop_index(batch_op.f("ix_adapter_tags_adapter_id"))

    op.drop_table("adapter_tags")
    with op.batch_alter_table("adapters", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_adapters_owner_id"))
        batch_op.drop_index(batch_op.f("ix_adapters_base_id"))

    op.drop_table("adapters")
    op.drop_table("log_entries")
