"""`viz market`: publish adapters with a licence and a price, find them, take them down."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from viz.accounts import get_account
from viz.api import load_embedder_cached
from viz.cli._context import session, state, table
from viz.market.catalogue import (
    PublishRequest,
    approve_version,
    find_version,
    get_adapter,
    restore_version,
    search_adapters,
    takedown_version,
)
from viz.market.hierarchy import ancestors, manifest_of
from viz.market.listings import list_document
from viz.market.merge import MIN_CONTRIBUTION, MergeOutcome, MergeRequest, merge_children
from viz.models import get_base_model
from viz.models.loading import ensure_cached
from viz.routing.hierarchy import adapter_tree, render_tree
from viz.routing.profiles import build_profile
from viz.routing.publish import publish_with_profile
from viz.store.schema import Document
from viz.training import select_documents
from viz.training.dataset import tokenise_document

VALIDATION_WINDOWS = 48

app = typer.Typer(
    help="Marketplace: publish, list, show, search, take down.\n\n"
    "Example: viz market publish .viz/adapters/qa --account ada --name qa "
    "--version 1.0.0 --licence CC-BY-4.0 --price-in 10 --price-out 20"
)


@app.command("publish")
def publish(
    context: typer.Context,
    folder: Path = typer.Argument(
        ..., help="PEFT adapter folder (adapter_config.json + adapter_model.safetensors)"
    ),
    account: str = typer.Option(..., help="Publishing creator"),
    name: str = typer.Option(..., help="Catalogue name"),
    version: str = typer.Option(..., help="Semver, immutable once published (e.g. 1.0.0)"),
    licence: str = typer.Option(..., "--licence", "--license", help="SPDX expression"),
    price_in: int = typer.Option(..., help="Micro-units per 1,000 input tokens"),
    price_out: int = typer.Option(..., help="Micro-units per 1,000 output tokens"),
    base: str | None = typer.Option(None, help="Base id (default: from the manifest/config)"),
    parent: str | None = typer.Option(None, help="Parent adapter in the hierarchy"),
    tag: list[str] = typer.Option([], "--tag", "-t", help="Tag (repeatable)"),
    visibility: str = typer.Option("public", help="public | private"),
    description: str = typer.Option("", help="One line on what it is good at"),
) -> None:
    """Screen an adapter and publish it; a flagged upload waits as pending for an admin.

    Example: viz market publish .viz/adapters/qasper-nlp --account ai2 --name qasper-nlp
    --version 1.0.0 --licence CC-BY-4.0 --price-in 10 --price-out 20 --tag nlp
    """
    settings = state(context).settings
    request = PublishRequest(
        name=name,
        version=version,
        licence=licence,
        price_in_micro=price_in,
        price_out_micro=price_out,
        base_id=base,
        parent=parent,
        tags=tuple(tag),
        visibility=visibility,
        description=description,
    )
    with session(context) as database:
        owner = get_account(database, account)
        published, report = publish_with_profile(
            database,
            settings.blobs_dir,
            settings.models_dir,
            folder,
            request,
            owner=owner,
            embedder=load_embedder_cached(),
        )
        _print_report(json.loads(report.to_json()))
        typer.echo(f"domain profile: {published.profile_source}")
        typer.echo(f"published {name}@{version}: {published.status}")


@app.command("merge")
def merge(
    context: typer.Context,
    parent: str = typer.Argument(..., help="The parent adapter to merge its children into"),
    account: str = typer.Option(..., help="The parent's creator"),
    version: str = typer.Option(..., help="The merged parent's new version (e.g. 1.1.0)"),
    documents: list[int] = typer.Option(
        [], "--documents", "-d", help="Validation document id (repeat): your own documents"
    ),
    tag: list[str] = typer.Option([], "--tag", "-t", help="Validation documents with this tag"),
    combination: str = typer.Option("ties_svd", help="ties_svd | dare_ties_svd | svd"),
    density: float = typer.Option(0.5, help="Share of each delta TIES / DARE keeps"),
    min_contribution: float = typer.Option(
        MIN_CONTRIBUTION, help="Least validation-loss drop (nats/token) a child must bring"
    ),
    sequence_length: int = typer.Option(128, help="Tokens per validation window"),
    dry_run: bool = typer.Option(False, "--dry-run", help="Measure and decide; publish nothing"),
) -> None:
    """Merge a parent's approved children into its next version, gated by contribution.

    Each child's marginal effect on your validation documents is measured; children that hurt
    (poisoned) or add nothing (free-riding) are left out, with the reason in the public log.
    Contributing children's creators get a share of the new version's royalties.

    Example: viz market merge qasper-nlp --account ai2 --version 1.1.0 --documents 3
    """
    # deferred: transformers is heavy

    settings = state(context).settings
    with session(context) as database:
        owner = get_account(database, account)
        chosen = select_documents(database, owner, document_ids=documents, tags=tag)
        record = get_base_model(database, get_adapter(database, parent).base_id)
        windows = _validation_windows(
            chosen, ensure_cached(record, settings.models_dir), settings.blobs_dir, sequence_length
        )
        request = MergeRequest(
            parent=parent,
            version=version,
            validation=windows,
            combination=combination,
            density=density,
            min_contribution=min_contribution,
            dry_run=dry_run,
        )
        outcome = merge_children(
            database,
            settings.blobs_dir,
            settings.models_dir,
            settings.adapters_dir,
            request,
            owner=owner,
        )
        _print_decisions(outcome, f"{parent}@{version}")
        if outcome.version is not None:
            _print_report(json.loads(outcome.report.to_json()) if outcome.report else {})
            build_profile(database, outcome.version, settings.blobs_dir, load_embedder_cached())
            typer.echo(f"published {parent}@{version}: {outcome.version.status}")
        else:
            typer.echo("dry run: nothing published")


def _validation_windows(
    documents: list[Document], base_folder: Path, blobs_dir: Path, sequence_length: int
) -> list[tuple[int, ...]]:
    """At most VALIDATION_WINDOWS token windows, spread evenly over `documents`."""
    from transformers import AutoTokenizer  # deferred: transformers is heavy

    tokenizer = AutoTokenizer.from_pretrained(base_folder)
    windows = [
        w
        for d in documents
        for w in tokenise_document(d, blobs_dir, tokenizer, sequence_length, 0).windows
    ]
    step = max(1, len(windows) // VALIDATION_WINDOWS)
    return windows[::step][:VALIDATION_WINDOWS]


def _print_decisions(outcome: MergeOutcome, label: str) -> None:
    """Each child's decision, the validation losses and the royalty shares of `label`."""
    rows = [
        [
            c.label,
            c.creator,
            "-" if c.contribution is None else f"{c.contribution:+.4f}",
            "merged" if c.included else f"left out ({c.caught_by})",
            c.reason,
        ]
        for c in outcome.candidates
    ]
    typer.echo(table(rows, ["child", "creator", "nats/token", "decision", "why"]))
    typer.echo(
        "validation loss (nats/token): "
        + ", ".join(f"{key} {value:.4f}" for key, value in outcome.loss.items())
    )
    for creator, bps, _why in outcome.shares:
        typer.echo(f"royalty share: {creator} gets {bps / 100:.2f}% of {label}")


@app.command("tree")
def tree(
    context: typer.Context,
    base: str | None = typer.Argument(None, help="Base id (default: the configured base)"),
    account: str | None = typer.Option(None, help="Also show this account's private adapters"),
) -> None:
    """Draw the hierarchy of adapters over a base: language -> domain -> sub-domain.

    Example: viz market tree smollm2-135m-instruct
    """
    settings = state(context).settings
    with session(context) as database:
        record = get_base_model(database, base or settings.default_base_model)
        caller = get_account(database, account) if account else None
        typer.echo(render_tree(record.id, adapter_tree(database, record.id, caller=caller)))


@app.command("list")
def list_(
    context: typer.Context,
    all_: bool = typer.Option(False, "--all", help="Include pending and taken-down versions"),
) -> None:
    """List the catalogue (newest usable version of each adapter).

    Example: viz market list
    """
    search(context, text="", tag=[], base=None, licence=None, price_out_max=None, all_=all_)


@app.command("search")
def search(
    context: typer.Context,
    text: str = typer.Argument("", help="Words in the name, description or card"),
    tag: list[str] = typer.Option([], "--tag", "-t", help="Tag (repeatable)"),
    base: str | None = typer.Option(None, help="Base model id"),
    licence: str | None = typer.Option(None, "--licence", "--license", help="SPDX expression"),
    price_out_max: int | None = typer.Option(None, help="Most micro-units per 1k out tokens"),
    all_: bool = typer.Option(False, "--all", help="Include pending and taken-down versions"),
) -> None:
    """Search the catalogue by text, tags, base, licence and price.

    Example: viz market search qasper --tag nlp --price-out-max 50
    """
    with session(context) as database:
        found = search_adapters(
            database,
            text=text,
            tags=tuple(tag),
            base_id=base,
            licence=licence,
            price_out_max_micro=price_out_max,
            include_unusable=all_,
        )
        rows = [
            [
                v.adapter.name,
                v.version,
                v.adapter.base_id,
                v.licence,
                str(v.price_in_micro),
                str(v.price_out_micro),
                v.status,
                ",".join(t.tag for t in v.adapter.tags),
            ]
            for v in found
        ]
    typer.echo(
        table(rows, ["name", "version", "base", "licence", "in/1k", "out/1k", "status", "tags"])
        if rows
        else "no adapters match"
    )


@app.command("show")
def show(
    context: typer.Context, reference: str = typer.Argument(..., help="NAME or NAME@VERSION")
) -> None:
    """Show an adapter: card, licence, prices, training documents, screening, versions, parents.

    Example: viz market show qasper-nlp@1.0.0
    """
    with session(context) as database:
        version = find_version(database, reference)
        adapter = get_adapter(database, version.adapter.name)
        chain = [a.name for a in ancestors(adapter, strict=False)]
        manifest = manifest_of(version)
        fields = {
            "adapter": f"{adapter.name}@{version.version} ({version.status})",
            "creator": adapter.owner.name,
            "base": adapter.base_id,
            "licence": version.licence,
            "price": f"{version.price_in_micro} in / {version.price_out_micro} out "
            "micro-units per 1k tokens",
            "weights": f"sha256 {version.weights_sha256}, rank {version.rank}, "
            f"{version.size_bytes} bytes",
            "parents": " -> ".join(chain) or "-",
            "versions": ", ".join(f"{v.version} ({v.status})" for v in adapter.versions),
            "tags": ", ".join(t.tag for t in adapter.tags) or "-",
        }
        for key, value in fields.items():
            typer.echo(f"{key + ':':10} {value}")
        documents = manifest.get("documents", [])
        typer.echo(
            f"\ntraining documents ({len(documents)}):"
            if documents
            else "\ntraining documents: not declared (plain PEFT upload)"
        )
        for d in documents:
            typer.echo(
                f"  {d['id']}  {d['licence']:12} {d['split']:8} {d['sha256'][:16]}  "
                f"{d['title'][:50]}"
            )
        typer.echo("")
        _print_report(json.loads(version.screening_json))
        if version.card:
            typer.echo("\n" + version.card)


@app.command("list-document")
def list_document_(
    context: typer.Context,
    document_id: int = typer.Argument(..., help="Document id (viz documents list)"),
    price_per_citation: int = typer.Option(..., help="Micro-units paid per citation"),
    account: str = typer.Option(..., help="The document's owner"),
) -> None:
    """Offer one of your documents for RAG, paid per citation.

    Example: viz market list-document 3 --price-per-citation 500 --account ai2
    """
    with session(context) as database:
        listing = list_document(
            database,
            document_id,
            price_per_citation_micro=price_per_citation,
            by=get_account(database, account),
        )
        typer.echo(
            f"listed document {listing.document_id} at "
            f"{listing.price_per_citation_micro} micro-units per citation"
        )


@app.command("approve")
def approve(
    context: typer.Context,
    reference: str = typer.Argument(...),
    account: str = typer.Option(..., help="Admin account"),
) -> None:
    """Approve a pending (flagged) version after review (admin).

    Example: viz market approve qasper-nlp@1.0.0 --account admin
    """
    with session(context) as database:
        version = approve_version(database, reference, by=get_account(database, account))
        typer.echo(f"approved {version.adapter.name}@{version.version}")


@app.command("takedown")
def takedown(
    context: typer.Context,
    reference: str = typer.Argument(..., help="NAME or NAME@VERSION"),
    reason: str = typer.Option(..., help="Why (e.g. the notice's claim)"),
    notice_from: str = typer.Option(..., help="Who sent the notice"),
    account: str = typer.Option(..., help="Admin, or owner of a training document"),
) -> None:
    """Make an adapter unavailable for new use at once; history is kept.

    Example: viz market takedown qasper-nlp@1.0.0 --reason "licence dispute"
    --notice-from "AI2 legal" --account admin
    """
    with session(context) as database:
        done = takedown_version(
            database,
            reference,
            reason=reason,
            notice_from=notice_from,
            by=get_account(database, account),
        )
        for version in done:
            typer.echo(f"taken down {version.adapter.name}@{version.version}")


@app.command("restore")
def restore(
    context: typer.Context,
    reference: str = typer.Argument(..., help="NAME@VERSION"),
    reason: str = typer.Option(..., help="The counter-notice"),
    account: str = typer.Option(..., help="Admin account"),
) -> None:
    """Restore a taken-down version after a counter-notice (admin).

    Example: viz market restore qasper-nlp@1.0.0 --reason "counter-notice accepted"
    --account admin
    """
    with session(context) as database:
        version = restore_version(
            database, reference, reason=reason, by=get_account(database, account)
        )
        typer.echo(f"restored {version.adapter.name}@{version.version}: {version.status}")


def _print_report(report: dict) -> None:  # type: ignore[type-arg]
    typer.echo(f"screening: {report['status']}")
    for check in report["checks"]:
        typer.echo(
            f"  {check['stage']:10} {check['outcome']:5} {check['seconds']:6.2f}s  "
            f"{check['detail']}"
        )
