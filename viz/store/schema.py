"""Tables of the catalogue: accounts, API keys, documents, base models.

The schema is defined once here; Alembic migrations in `migrations/versions/` create it, and a
test checks the two agree on SQLite and PostgreSQL. Money is an integer count of micro-units.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

__all__ = [
    "Account",
    "Adapter",
    "AdapterTag",
    "AdapterVersion",
    "ApiKey",
    "Base",
    "BaseModel",
    "Document",
    "DocumentListing",
    "DocumentTag",
    "LedgerAccount",
    "LedgerPending",
    "LedgerTransfer",
    "LogEntry",
    "Takedown",
    "UsageEvent",
    "VersionShare",
    "WebSession",
    "WriteLock",
    "utc_now",
]

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utc_now() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Account(Base):
    """A person or firm; the same account can be a creator and a consumer."""

    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(16))  # person | firm
    display_name: Mapped[str] = mapped_column(String(200), default="")
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)
    # Argon2id hash for the marketplace's login (viz.web.auth); None: no web login.
    password_hash: Mapped[str | None] = mapped_column(String(200), nullable=True)

    api_keys: Mapped[list[ApiKey]] = relationship(back_populates="account")


class ApiKey(Base):
    """An API key `viz_<key_id>_<secret>`: only the SHA-256 digest of the secret is stored."""

    __tablename__ = "api_keys"

    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    secret_sha256: Mapped[str] = mapped_column(String(64))
    label: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    account: Mapped[Account] = relationship(back_populates="api_keys")


class WebSession(Base):
    """A marketplace login: the cookie holds a random token, the row only its SHA-256."""

    __tablename__ = "web_sessions"

    token_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    account: Mapped[Account] = relationship()


class Document(Base):
    """A creator's source text: content-addressed, licensed, with usage permissions."""

    __tablename__ = "documents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    filename: Mapped[str] = mapped_column(String(255))
    title: Mapped[str] = mapped_column(String(500))
    media_type: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    licence: Mapped[str] = mapped_column(String(500))
    attribution: Mapped[str] = mapped_column(Text, default="")
    # CAWG training-and-data-mining style permissions: "allowed" | "notAllowed".
    ai_training: Mapped[str] = mapped_column(String(16))
    ai_inference: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)

    owner: Mapped[Account] = relationship()
    tags: Mapped[list[DocumentTag]] = relationship(
        cascade="all, delete-orphan", order_by="DocumentTag.tag"
    )


class DocumentTag(Base):
    __tablename__ = "document_tags"
    __table_args__ = (UniqueConstraint("document_id", "tag"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id"), index=True)
    tag: Mapped[str] = mapped_column(String(64), index=True)


class BaseModel(Base):
    """A frozen pretrained LLM with its licence and the declared provenance of its training data."""

    __tablename__ = "base_models"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    architecture: Mapped[str] = mapped_column(String(100))
    parameter_count: Mapped[int] = mapped_column(BigInteger)
    licence: Mapped[str] = mapped_column(String(500))
    provenance_class: Mapped[str] = mapped_column(String(32))
    provenance_sources: Mapped[str] = mapped_column(Text, default="")
    source_kind: Mapped[str] = mapped_column(String(16))  # pypi | hf_folder | gguf | hub
    source_ref: Mapped[str] = mapped_column(Text)
    weights_sha256: Mapped[str] = mapped_column(String(64))
    builtin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)


class Adapter(Base):
    """A published adapter: a name owned by a creator, on one base, with immutable versions."""

    __tablename__ = "adapters"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    base_id: Mapped[str] = mapped_column(ForeignKey("base_models.id"), index=True)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("adapters.id"), nullable=True)
    visibility: Mapped[str] = mapped_column(String(16))  # public | private
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)

    owner: Mapped[Account] = relationship()
    parent: Mapped[Adapter | None] = relationship(remote_side="Adapter.id")
    versions: Mapped[list[AdapterVersion]] = relationship(
        back_populates="adapter", order_by="AdapterVersion.id"
    )
    tags: Mapped[list[AdapterTag]] = relationship(
        cascade="all, delete-orphan", order_by="AdapterTag.tag"
    )


class AdapterTag(Base):
    __tablename__ = "adapter_tags"
    __table_args__ = (UniqueConstraint("adapter_id", "tag"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    adapter_id: Mapped[int] = mapped_column(ForeignKey("adapters.id"), index=True)
    tag: Mapped[str] = mapped_column(String(64), index=True)


class AdapterVersion(Base):
    """One immutable version: weights by sha256, licence, prices and its screening outcome.

    Prices are integer micro-units per 1,000 tokens in and out.
    """

    __tablename__ = "adapter_versions"
    __table_args__ = (UniqueConstraint("adapter_id", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    adapter_id: Mapped[int] = mapped_column(ForeignKey("adapters.id"), index=True)
    version: Mapped[str] = mapped_column(String(64))
    licence: Mapped[str] = mapped_column(String(500))
    price_in_micro: Mapped[int] = mapped_column(BigInteger)
    price_out_micro: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16))  # pending|approved|rejected|taken_down
    weights_sha256: Mapped[str] = mapped_column(String(64), index=True)
    config_json: Mapped[str] = mapped_column(Text)
    manifest_json: Mapped[str] = mapped_column(Text, default="")
    card: Mapped[str] = mapped_column(Text, default="")
    rank: Mapped[int] = mapped_column(Integer)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    update_norm: Mapped[float] = mapped_column(Float)
    sketch: Mapped[bytes] = mapped_column(LargeBinary)
    screening_json: Mapped[str] = mapped_column(Text)
    # The domain profile (viz.routing.profiles): a unit float32 vector, and what it came from.
    profile: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    profile_source: Mapped[str] = mapped_column(Text, default="", server_default="")
    published_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)

    adapter: Mapped[Adapter] = relationship(back_populates="versions")


class VersionShare(Base):
    """Part of an adapter version's royalty paid to another creator, in basis points.

    A version built by merging other creators' adapters pays each contributor `share_bps` of
    what it earns; its owner keeps the rest. Set once, before the version earns anything, and
    never changed (like the version itself), so every micro-unit it earns follows one split.
    """

    __tablename__ = "version_shares"
    __table_args__ = (
        CheckConstraint("share_bps >= 1 AND share_bps <= 10000", name="share_bps_range"),
    )

    adapter_version_id: Mapped[int] = mapped_column(
        ForeignKey("adapter_versions.id"), primary_key=True
    )
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), primary_key=True)
    share_bps: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(Text)


class Takedown(Base):
    """A takedown of one adapter version and, once a counter-notice is accepted, its restore.

    Rows are never deleted: the history of takedowns stays.
    """

    __tablename__ = "takedowns"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("adapter_versions.id"), index=True)
    reason: Mapped[str] = mapped_column(Text)
    notice_from: Mapped[str] = mapped_column(String(500))
    by_account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    status_before: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)
    restored_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    restore_reason: Mapped[str] = mapped_column(Text, default="")


class DocumentListing(Base):
    """A document offered for RAG with a price per citation (integer micro-units)."""

    __tablename__ = "document_listings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id"), unique=True)
    price_per_citation_micro: Mapped[int] = mapped_column(BigInteger)
    listed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)


class LogEntry(Base):
    """One leaf of the public append-only log (RFC 6962): the canonical JSON of an event."""

    __tablename__ = "log_entries"

    index: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(String(32))
    data: Mapped[str] = mapped_column(Text)
    leaf_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)


class WriteLock(Base):
    """One row per serialised writer ("ledger", "log"): updating the row is the lock.

    The first statement of a ledger or log write updates its row, so on PostgreSQL the row lock
    queues writers until commit, and on SQLite the write lock is taken before anything is read.
    """

    __tablename__ = "write_locks"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    generation: Mapped[int] = mapped_column(BigInteger, default=0)


class LedgerAccount(Base):
    """A ledger account: running sums of its transfers, kept under the ledger lock.

    `code` names it (`consumer:ada`, `creator:ada`, `platform`, `escrow`, `clearing`,
    `external`). Every kind but external must keep debits (posted + pending) within
    credits posted + credit limit; `viz ledger verify` recomputes the sums from the transfers.
    """

    __tablename__ = "ledger_accounts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(80), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id"), nullable=True)
    credit_limit: Mapped[int] = mapped_column(BigInteger, default=0)
    debits_pending: Mapped[int] = mapped_column(BigInteger, default=0)
    debits_posted: Mapped[int] = mapped_column(BigInteger, default=0)
    credits_pending: Mapped[int] = mapped_column(BigInteger, default=0)
    credits_posted: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)


class LedgerTransfer(Base):
    """One immutable transfer: debit one account, credit another, a positive integer amount.

    `seq` is gapless and `chain` = SHA-256(previous chain || this transfer's canonical line), so
    the whole history is hash-chained; batches of it are anchored in the public log. Phases:
    `single` (posted at once), `pending` (reserves funds until `expires_at_us`), and the
    resolutions `post`, `void`, `expire`, each naming its pending transfer (at most one each).
    """

    __tablename__ = "ledger_transfers"
    __table_args__ = (CheckConstraint("amount > 0", name="amount_positive"),)

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    transfer_id: Mapped[str] = mapped_column(String(160), unique=True)
    debit_id: Mapped[int] = mapped_column(ForeignKey("ledger_accounts.id"), index=True)
    credit_id: Mapped[int] = mapped_column(ForeignKey("ledger_accounts.id"), index=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    phase: Mapped[str] = mapped_column(String(8))
    pending_seq: Mapped[int | None] = mapped_column(
        ForeignKey("ledger_transfers.seq"), unique=True, nullable=True
    )
    expires_at_us: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    kind: Mapped[str] = mapped_column(String(16))
    request_id: Mapped[str | None] = mapped_column(String(100), index=True, nullable=True)
    adapter_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("adapter_versions.id"), nullable=True
    )
    document_id: Mapped[int | None] = mapped_column(ForeignKey("documents.id"), nullable=True)
    memo: Mapped[str] = mapped_column(String(200), default="")
    timestamp_us: Mapped[int] = mapped_column(BigInteger)
    chain: Mapped[str] = mapped_column(String(64))


class LedgerPending(Base):
    """Pending transfers not yet posted, voided or expired: what expiry scans (derived state).
    `expires_at_us` is NULL for a pending transfer without a timeout (a payout in flight)."""

    __tablename__ = "ledger_pending"

    seq: Mapped[int] = mapped_column(ForeignKey("ledger_transfers.seq"), primary_key=True)
    expires_at_us: Mapped[int | None] = mapped_column(BigInteger, index=True, nullable=True)


class UsageEvent(Base):
    """One served request, metered: idempotent by request id, settled once.

    `input_json` is the canonical usage as the caller gave it (what a retry must match);
    `settlement_json` is the split it was settled with (what a retry gets back).
    """

    __tablename__ = "usage_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[str] = mapped_column(String(100), unique=True)
    consumer_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    base_id: Mapped[str] = mapped_column(String(100))
    tokens_in: Mapped[int] = mapped_column(Integer)
    tokens_out: Mapped[int] = mapped_column(Integer)
    charge: Mapped[int] = mapped_column(BigInteger)
    input_json: Mapped[str] = mapped_column(Text)
    settlement_json: Mapped[str] = mapped_column(Text)
    occurred_at_us: Mapped[int] = mapped_column(BigInteger)
    settled_at_us: Mapped[int] = mapped_column(BigInteger)


# The gateway's shared-state tables live in their own module, on the same metadata.
from viz.store import gateway as _gateway  # noqa: E402,F401
