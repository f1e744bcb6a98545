"""Settings: the one typed object that says where Viz keeps its data and how far it may go.

Read once at the entry point (`viz` CLI callback, later the API server) from, in order of
precedence: flags, environment variables `VIZ_*`, a `viz.toml` in the working directory, defaults.
Components never read settings themselves; they take plain arguments.

    VIZ_HOME=/srv/viz VIZ_DATABASE_URL=postgresql+psycopg://viz@127.0.0.1/viz viz db upgrade
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

__all__ = ["Settings", "DEFAULT_BASE_MODEL"]

DEFAULT_BASE_MODEL = "smollm2-135m-instruct"


class Settings(BaseSettings):
    """Viz settings. Every field can be set as `VIZ_<FIELD>` or as `field = ...` in `viz.toml`."""

    model_config = SettingsConfigDict(
        env_prefix="VIZ_", toml_file="viz.toml", extra="forbid", frozen=True
    )

    home: Path = Path(".viz")
    """Data folder: the SQLite database, content-addressed blobs and the model cache.
    Default `./.viz` in the working directory, so a project's data sits beside it (like `.git`)."""

    database_url: str = ""
    """SQLAlchemy URL. Empty means `sqlite:///<home>/viz.db`. PostgreSQL:
    `postgresql+psycopg://user:password@127.0.0.1:5432/viz`."""

    default_base_model: str = DEFAULT_BASE_MODEL
    """Base model used when a command names none."""

    document_bytes_max: int = Field(default=20 * 1024 * 1024, gt=0)
    """Largest document `viz documents add` accepts, in bytes."""

    documents_per_add_max: int = Field(default=1000, gt=0)
    """Most files one `viz documents add` call ingests."""

    prompt_tokens_max: int = Field(default=4096, gt=0)
    """Longest prompt (after the chat template) generation accepts, in tokens."""

    generate_tokens_max: int = Field(default=2048, gt=0)
    """Largest `--max-tokens` a generation may ask for."""

    api_keys_per_account_max: int = Field(default=100, gt=0)
    """Most active (unrevoked) API keys one account may hold."""

    platform_fee_bps: int = Field(default=1000, ge=0, le=10_000)
    """The platform's share of every charge, in basis points (1000 = 10%)."""

    reservation_timeout_s: int = Field(default=600, gt=0, le=7 * 24 * 3600)
    """How long a request's reservation holds the consumer's funds before it expires."""

    serve_batch_max: int = Field(default=8, gt=0, le=256)
    """Most requests `viz serve` decodes together in one batch."""

    serve_queue_max: int = Field(default=64, gt=0, le=100_000)
    """Most requests waiting for a batch slot; more are refused with 429."""

    serve_drain_s: float = Field(default=30.0, ge=0, le=3600)
    """On shutdown, how long in-flight requests may finish before they are cancelled."""

    embeddings_price: int = Field(default=20, ge=0, le=1_000_000)
    """POST /v1/embeddings: the operator's price in micro-units per 1,000 input tokens (the
    platform earns it; settled like any usage event). 0: free."""

    embeddings_inputs_max: int = Field(default=256, ge=1, le=4096)
    """POST /v1/embeddings: the most texts one request may embed."""

    api_requests_per_minute: int = Field(default=600, ge=0, le=10_000_000)
    """Completions per account per minute, counted in the database (so every replica shares
    it); more get 429 rate_limit_exceeded. 0: no limit."""

    lease_ttl_s: float = Field(default=15.0, ge=1, le=3600)
    """A `viz serve` process renews its lease every third of this; when it lapses (the process
    died), any replica settles or voids the requests it was serving."""

    rag_reader: str = Field(default="reader", max_length=64)
    """The grounded reader adapter (`viz adapters train-reader`) a `viz.rag` request composes
    after its model by default, when the catalogue serves it for the request's base ("" : none);
    a request chooses another, or "none", with `viz.rag.reader`."""

    ledger_anchor_interval_s: float = Field(default=2.0, gt=0, le=60)
    """How often a `viz serve` process anchors the ledger's new transfers in the public log
    (its requests' ledger writes defer it: `viz.ledger.anchors`)."""

    progress_interval_s: float = Field(default=1.0, gt=0, le=60)
    """How often a stream records the tokens it has sent (what is settled if its server dies)."""

    idempotency_ttl_s: int = Field(default=24 * 3600, ge=3600, le=30 * 24 * 3600)
    """How long an answered Idempotency-Key's answer is kept for replays."""

    idempotency_keys_max: int = Field(default=100_000, gt=0, le=100_000_000)
    """Most stored answers of Idempotency-Keys (the oldest are evicted first)."""

    idempotency_bytes_max: int = Field(default=256 * 1024 * 1024, gt=0)
    """Most bytes of stored answers of Idempotency-Keys (the oldest are evicted first)."""

    adapter_cache_bytes_max: int = Field(default=512 * 1024 * 1024, gt=0)
    """Bytes of adapter weights kept resident by `viz serve` (least recently used out first)."""

    serve_engine: Literal["builtin", "vllm"] = "builtin"
    """What generates behind `viz serve`: Viz's own engine, or vLLM servers (`vllm_urls`)."""

    vllm_urls: list[str] = Field(default_factory=list, max_length=64)
    """The vLLM OpenAI servers of the vLLM engine, all serving the same base (JSON list)."""

    vllm_adapter_dir: Path | None = None
    """Where the vLLM engine writes adapters for its servers to read (a shared filesystem
    at scale); default `<home>/vllm-adapters`."""

    vllm_max_lora_rank: int = Field(default=64, gt=0, le=512)
    """The servers' `--max-lora-rank`: a composition stacking past it is refused (400)."""

    vllm_adapters_max: int = Field(default=32, gt=0, le=10_000)
    """Stacked adapters each vLLM server keeps loaded (least recently used unloaded first)."""

    vllm_adapter_dir_bytes_max: int = Field(default=20 * 1024**3, gt=0)
    """Bytes of stacked adapters kept in `vllm_adapter_dir` (least recently used deleted
    first; never one a server has loaded)."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))

    @field_validator("home")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        return value.expanduser()

    @property
    def database_url_resolved(self) -> str:
        """The database URL, with the SQLite default filled in."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.home / 'viz.db'}"

    @property
    def blobs_dir(self) -> Path:
        """Where document contents live, content-addressed by sha256."""
        return self.home / "blobs"

    @property
    def adapters_dir(self) -> Path:
        """Where trained adapters are written, one folder each."""
        return self.home / "adapters"

    @property
    def log_key_path(self) -> Path:
        """The public log's Ed25519 signing key (created on first use, mode 0600)."""
        return self.home / "log" / "signing-key.pem"

    @property
    def vllm_adapter_dir_resolved(self) -> Path:
        """Where the vLLM engine writes stacked adapters."""
        return self.vllm_adapter_dir or self.home / "vllm-adapters"

    @property
    def models_dir(self) -> Path:
        """Where converted base models are cached as safetensors folders."""
        return self.home / "models"
