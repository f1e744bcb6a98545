"""Shared fixtures: a fresh database per test (SQLite, and PostgreSQL for storage tests), a data
folder in tmp_path, and the real default model converted once per session.

PostgreSQL: `scripts/postgres-test-server` (run by `make test`) starts a server on 127.0.0.1 and
prints its URL into VIZ_TEST_POSTGRES_URL. Set VIZ_TEST_POSTGRES=0 to skip those tests.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text

from viz.store import open_database
from worlds.catalogue import REPO, qasper_subset

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Under xdist, each worker's torch (and the CLI processes its tests start) gets its share of the
# cores, not all of them: two workers of two OpenMP threads each on two cores wait on each other
# at every parallel region (set before torch is imported; OMP_NUM_THREADS set outside wins).
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    share = (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, share)))

POSTGRES_URL_DEFAULT = "postgresql+psycopg://viz:viz@127.0.0.1:5432/viz_test"

# The longest test files (measured with --durations on a 2-core CPU), run first: with a file per
# worker (`make test` runs xdist with --dist loadfile --no-loadscope-reorder) the long ones then
# run beside the short ones instead of last and alone. The defences world alone is minutes.
LONGEST_FIRST = (
    "test_defences.py",
    "test_training.py",
    "test_serving.py",
    "test_rag_pipeline.py",
    "test_continual.py",
    "test_ledger_reliability.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: order for order, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest as found


def postgres_url() -> str:
    return os.environ.get("VIZ_TEST_POSTGRES_URL", POSTGRES_URL_DEFAULT)


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    engine = open_database(f"sqlite:///{tmp_path / 'viz.db'}")
    yield engine
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A migrated, empty database: SQLite, then PostgreSQL (a fresh schema per test)."""
    if request.param == "sqlite":
        engine = open_database(f"sqlite:///{tmp_path / 'viz.db'}")
        yield engine
        engine.dispose()
        return
    yield from _postgres_engine()


def _postgres_engine() -> Iterator[Engine]:
    if os.environ.get("VIZ_TEST_POSTGRES") == "0":
        pytest.skip("VIZ_TEST_POSTGRES=0: PostgreSQL storage tests skipped on request")
    admin = create_engine(postgres_url(), isolation_level="AUTOCOMMIT")
    schema = f"test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as error:  # noqa: BLE001 - any connection failure means the same thing
        pytest.fail(
            f"PostgreSQL at {postgres_url()} is not reachable ({type(error).__name__}); run "
            "scripts/postgres-test-server (make test does) or set VIZ_TEST_POSTGRES=0 to skip"
        )
    engine = open_database(
        postgres_url() + f"?options=-csearch_path%3D{schema}", upgrade_schema=True
    )
    yield engine
    engine.dispose()
    with admin.connect() as connection:
        connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


# --- models -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """Model cache shared by the session (and kept between local runs: conversion takes ~25 s).

    Set VIZ_TEST_MODELS_DIR to put it elsewhere.
    """
    folder = Path(os.environ.get("VIZ_TEST_MODELS_DIR", REPO / ".viz" / "test-models"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="session")
def smollm2_record():  # type: ignore[no-untyped-def]
    """The builtin base's registry record, as `ensure_builtin_models` writes it."""
    from viz.models.registry import BUILTIN_BASES, builtin_record

    return builtin_record(BUILTIN_BASES["smollm2-135m-instruct"])


@pytest.fixture(scope="session")
def smollm2_folder(models_dir: Path, smollm2_record) -> Path:  # type: ignore[no-untyped-def]
    """The default model converted from its GGUF to a verified safetensors folder."""
    from viz.models.loading import ensure_cached

    return ensure_cached(smollm2_record, models_dir)


@pytest.fixture(scope="session")
def smollm2(smollm2_record, models_dir: Path):  # type: ignore[no-untyped-def]
    """The real default model, loaded once in fp32."""
    from viz.models.loading import load_model

    return load_model(smollm2_record, models_dir)


@pytest.fixture(scope="session")
def tokenizer(smollm2):  # type: ignore[no-untyped-def]
    return smollm2.tokenizer


@pytest.fixture(scope="session")
def tiny_model_folder(tmp_path_factory: pytest.TempPathFactory, tokenizer) -> Path:  # type: ignore[no-untyped-def]
    """A 2-layer random Llama with the real SmolLM2 tokenizer, saved as safetensors."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    folder = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def embedder():  # type: ignore[no-untyped-def]
    """The shipped all-MiniLM-L6-v2 embedder, loaded once."""
    from viz.rag import load_embedder

    return load_embedder()


@pytest.fixture(scope="session")
def tiny_reranker(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cross-encoder trained for a few steps on four QASPER-train papers (one MiniLM layer):
    real weights in the real format, not a good reranker."""
    from viz.rag.rerank_train import TrainingSettings, train_cross_encoder

    data = qasper_subset(tmp_path_factory.mktemp("qasper-train"), "qasper-train", 4)
    out = tmp_path_factory.mktemp("rerankers") / "tiny"
    settings = TrainingSettings(steps=3, layers=1, max_tokens=64, questions_per_step=2)
    train_cross_encoder(data, out, settings)
    return out
