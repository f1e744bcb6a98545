"""ledger: accounts, transfers (hash-chained), pending reservations, usage events, write locks

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


# Over 70 lines on purpose: a migration is one DDL script, read top to bottom against the
# schema it creates; split into helpers it would hide the order the tables are created in.
def upgrade() -> None:
    op.create_table(
        "write_locks",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_write_locks")),
    )
    write_locks = sa.table(
        "write_locks", sa.column("name", sa.String), sa.column("generation", sa.BigInteger)
    )
    op.bulk_insert(
        write_locks, [{"name": "ledger", "generation": 0}, {"name": "log", "generation": 0}]
    )
    op.create_table(
        "ledger_accounts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=80), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=True),
        sa.Column("credit_limit", sa.BigInteger(), nullable=False),
        sa.Column("debits_pending", sa.BigInteger(), nullable=False),
        sa.Column("debits_posted", sa.BigInteger(), nullable=False),
        sa.Column("credits_pending", sa.BigInteger(), nullable=False),
        sa.Column("credits_posted", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["accounts.id"], name=op.f("fk_ledger_accounts_owner_id_accounts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_accounts")),
        sa.UniqueConstraint("code", name=op.f("uq_ledger_accounts_code")),
    )
    op.create_table(
        "usage_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.String(length=100), nullable=False),
        sa.Column("consumer_id", sa.Integer(), nullable=False),
        sa.Column("base_id", sa.String(length=100), nullable=False),
        sa.Column("tokens_in", sa.Integer(), nullable=False),
        sa.Column("tokens_out", sa.Integer(), nullable=False),
        sa.Column("charge", sa.BigInteger(), nullable=False),
        sa.Column("input_json", sa.Text(), nullable=False),
        sa.Column("settlement_json", sa.Text(), nullable=False),
        sa.Column("occurred_at_us", sa.BigInteger(), nullable=False),
        sa.Column("settled_at_us", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["consumer_id"], ["accounts.id"], name=op.f("fk_usage_events_consumer_id_accounts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_events")),
        sa.UniqueConstraint("request_id", name=op.f("uq_usage_events_request_id")),
    )
    with op.batch_alter_table("usage_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_usage_events_consumer_id"), ["consumer_id"], unique=False
        )

    op.create_table(
        "ledger_transfers",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("transfer_id", sa.String(length=160), nullable=False),
        sa.Column("debit_id", sa.Integer(), nullable=False),
        sa.Column("credit_id", sa.Integer(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("phase", sa.String(length=8), nullable=False),
        sa.Column("pending_seq", sa.BigInteger(), nullable=True),
        sa.Column("expires_at_us", sa.BigInteger(), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("request_id", sa.String(length=100), nullable=True),
        sa.Column("adapter_version_id", sa.Integer(), nullable=True),
        sa.Column("document_id", sa.Integer(), nullable=True),
        sa.Column("memo", sa.String(length=200), nullable=False),
        sa.Column("timestamp_us", sa.BigInteger(), nullable=False),
        sa.Column("chain", sa.String(length=64), nullable=False),
        sa.CheckConstraint("amount > 0", name=op.f("ck_ledger_transfers_amount_positive")),
        sa.ForeignKeyConstraint(
            ["adapter_version_id"],
            ["adapter_versions.id"],
            name=op.f("fk_ledger_transfers_adapter_version_id_adapter_versions"),
        ),
        sa.ForeignKeyConstraint(
            ["credit_id"],
            ["ledger_accounts.id"],
            name=op.f("fk_ledger_transfers_credit_id_ledger_accounts"),
        ),
        sa.ForeignKeyConstraint(
            ["debit_id"],
            ["ledger_accounts.id"],
            name=op.f("fk_ledger_transfers_debit_id_ledger_accounts"),
        ),
        sa.ForeignKeyConstraint(
            ["document_id"],
            ["documents.id"],
            name=op.f("fk_ledger_transfers_document_id_documents"),
        ),
        sa.ForeignKeyConstraint(
            ["pending_seq"],
            ["ledger_transfers.seq"],
            name=op.f("fk_ledger_transfers_pending_seq_ledger_transfers"),
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_ledger_transfers")),
        sa.UniqueConstraint("pending_seq", name=op.f("uq_ledger_transfers_pending_seq")),
        sa.UniqueConstraint("transfer_id", name=op.f("uq_ledger_transfers_transfer_id")),
    )
    with op.batch_alter_table("ledger_transfers", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_ledger_transfers_credit_id"), ["credit_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_ledger_transfers_debit_id"), ["debit_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_ledger_transfers_request_id"), ["request_id"], unique=False
        )

    op.create_table(
        "ledger_pending",
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("expires_at_us", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["seq"], ["ledger_transfers.seq"], name=op.f("fk_ledger_pending_seq_ledger_transfers")
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_ledger_pending")),
    )
    with op.batch_alter_table("ledger_pending", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_ledger_pending_expires_at_us"), ["expires_at_us"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("ledger_pending", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ledger_pending_expires_at_us"))

    op.drop_table("ledger_pending")
    with op.batch_alter_table("ledger_transfers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ledger_transfers_request_id"))
        batch_op.drop_index(batch_op.f("ix_ledger_transfers_debit_id"))
        batch_op.drop_index(batch_op.f("ix_ledger_transfers_credit_id"))

    op.drop_table("ledger_transfers")
    with op.batch_alter_table("usage_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_usage_events_consumer_id"))

    op.drop_table("usage_events")
    op.drop_table("ledger_accounts")
    op.drop_table("write_locks")
