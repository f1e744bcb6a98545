"""Building the QASPER hierarchy of `viz eval routing` in a catalogue (see `plan`).

Every adapter is trained by one creator account, `qasper-creators`, with the one training
recipe (`viz.training.recipe.train_from_documents`) and published with the one publish path
(`viz.routing.publish.publish_with_profile`). Training windows are 128 tokens, 4 per step,
LoRA rank 8 on every linear layer of the bf16 base. What is published is skipped, so a stopped
build resumes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select

from viz.accounts import create_account, get_account
from viz.config import Settings
from viz.documents import DocumentInput, add_documents
from viz.errors import NotFound
from viz.eval.routing.plan import ATTRIBUTION, CREATOR, DESCRIPTIONS, LICENCE, HierarchyPlan
from viz.market.catalogue import PublishRequest
from viz.routing.publish import publish_with_profile
from viz.store import open_database, session_scope
from viz.store.schema import Adapter
from viz.training import TrainingConfig, TrainingSet
from viz.training.recipe import train_from_documents

__all__ = ["build_hierarchy", "hierarchy_levels"]


def hierarchy_levels(plan: HierarchyPlan) -> list[tuple[str, str | None, tuple[Path, ...]]]:
    """(adapter, its parent, its training papers), parents first."""
    return [
        ("english", None, plan.english),
        ("nlp-research", "english", plan.domain),
        *((name, "nlp-research", papers) for name, papers in plan.subdomains.items()),
    ]


def build_hierarchy(
    settings: Settings,
    plan: HierarchyPlan,
    *,
    embedder: Any,
    steps: int = 40,
    say: Callable[[str], None] = print,
) -> None:
    """Catalogue the documents, train and publish the adapters; what is published is skipped,
    so a stopped build resumes."""
    database = open_database(settings.database_url_resolved)
    with session_scope(database) as session:
        try:
            get_account(session, CREATOR)
        except NotFound:
            create_account(session, CREATOR, kind="firm", display_name="QASPER authors (AI2)")
    config = TrainingConfig(
        method="lora",
        base_precision="bf16",
        steps=steps,
        batch_size=4,
        sequence_length=128,
        overlap=16,
        learning_rate=1e-3,
        held_out_fraction=0.2,
    )
    for level, (name, parent, paths) in enumerate(hierarchy_levels(plan)):
        with session_scope(database) as session:
            if session.scalar(select(Adapter).where(Adapter.name == name)) is not None:
                say(f"{name}: already published")
                continue
        document_ids = _catalogue(database, settings, name, paths)
        if not (settings.adapters_dir / name).exists():
            _train(database, settings, name, document_ids, config, say)
        with session_scope(database) as session:
            version, _ = publish_with_profile(
                session,
                settings.blobs_dir,
                settings.models_dir,
                settings.adapters_dir / name,
                _request(name, parent, level),
                owner=get_account(session, CREATOR),
                embedder=embedder,
            )
            say(f"{name}: published ({version.status}); profile from {version.profile_source}")
    database.dispose()


def _catalogue(
    database: Engine, settings: Settings, name: str, paths: tuple[Path, ...]
) -> list[int]:
    """Add the level's papers to the catalogue (known ones are kept); their document ids."""
    with session_scope(database) as session:
        added, known = add_documents(
            session,
            settings.blobs_dir,
            get_account(session, CREATOR),
            list(paths),
            DocumentInput(LICENCE, attribution=ATTRIBUTION, tags=(name,)),
            document_bytes_max=settings.document_bytes_max,
            documents_max=max(len(paths), 1),
            skip_existing=True,
        )
        return [d.id for d in added + known]


def _train(
    database: Engine,
    settings: Settings,
    name: str,
    document_ids: list[int],
    config: TrainingConfig,
    say: Callable[[str], None],
) -> None:
    def announce(training_set: TrainingSet) -> str:
        return f"{name}: training on {len(training_set.train)} documents, {config.steps} steps"

    train_from_documents(
        database,
        name=name,
        account=CREATOR,
        base=settings.default_base_model,
        config=config,
        blobs_dir=settings.blobs_dir,
        models_dir=settings.models_dir,
        adapters_dir=settings.adapters_dir,
        document_ids=document_ids,
        resume=(settings.adapters_dir / f".{name}.partial").exists(),
        say=say,
        announce=announce,
    )


def _request(name: str, parent: str | None, level: int) -> PublishRequest:
    return PublishRequest(
        name=name,
        version="1.0.0",
        licence=LICENCE,
        price_in_micro=10 * min(level + 1, 3),  # deeper levels cost more
        price_out_micro=30 * min(level + 1, 3),
        parent=parent,
        tags=(name,),
        description=DESCRIPTIONS[name],
    )
