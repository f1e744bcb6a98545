"""gateway: serve leases, requests in flight, idempotency keys and rate windows

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "serve_leases",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("host", sa.String(length=200), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at_us", sa.BigInteger(), nullable=False),
        sa.Column("expires_at_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_serve_leases")),
    )
    op.create_index(op.f("ix_serve_leases_expires_at_us"), "serve_leases", ["expires_at_us"])
    op.create_table(
        "requests_in_flight",
        sa.Column("request_id", sa.String(length=100), nullable=False),
        sa.Column("lease_id", sa.String(length=40), nullable=False),
        sa.Column("usage_json", sa.Text(), nullable=False),
        sa.Column("tokens_sent", sa.Integer(), nullable=False),
        sa.Column("updated_at_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("request_id", name=op.f("pk_requests_in_flight")),
    )
    op.create_index(op.f("ix_requests_in_flight_lease_id"), "requests_in_flight", ["lease_id"])
    op.create_table(
        "idempotency_keys",
        sa.Column("key_sha256", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("body_json", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.String(length=100), nullable=False),
        sa.Column("lease_id", sa.String(length=40), nullable=True),
        sa.Column("answer", sa.LargeBinary(), nullable=True),
        sa.Column("answer_bytes", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at_us", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_idempotency_keys_account_id_accounts")
        ),
        sa.PrimaryKeyConstraint("key_sha256", name=op.f("pk_idempotency_keys")),
    )
    op.create_index(op.f("ix_idempotency_keys_account_id"), "idempotency_keys", ["account_id"])
    op.create_index(
        op.f("ix_idempotency_keys_finished_at_us"), "idempotency_keys", ["finished_at_us"]
    )
    op.create_table(
        "rate_windows",
        sa.Column("scope", sa.String(length=100), nullable=False),
        sa.Column("window_us", sa.BigInteger(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("scope", "window_us", name=op.f("pk_rate_windows")),
    )


def downgrade() -> None:
    op.drop_table("rate_windows")
    op.drop_index(op.f("ix_idempotency_keys_finished_at_us"), table_name="idempotency_keys")
    op.drop_index(op.f("ix_idempotency_keys_account_id"), table_name="idempotency_keys")
    op.drop_table("idempotency_keys")
    op.drop_index(op.f("ix_requests_in_flight_lease_id"), table_name="requests_in_flight")
    op.drop_table("requests_in_flight")
    op.drop_index(op.f("ix_serve_leases_expires_at_us"), table_name="serve_leases")
    op.drop_table("serve_leases")
