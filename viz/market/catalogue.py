"""The catalogue: publishing adapter versions, finding them, taking them down and restoring.

    version, report = publish_adapter(session, blobs_dir, models_dir, Path("out/qasper-nlp"),
                                      PublishRequest(name="qasper-nlp", version="1.0.0", ...),
                                      owner=account)

Versions are immutable: publishing an existing name@version is refused. A rejected upload
stores nothing; a flagged one is stored as `pending` until an admin approves it. Every publish,
screening decision, approval, takedown and restore is appended to the public log.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, defer, selectinload

from viz.errors import Conflict, Forbidden, InvalidInput, NotFound
from viz.licences import normalise_licence
from viz.log.store import append_entry
from viz.market.hierarchy import (
    SEMVER,
    USABLE,
    check_parent_chain,
    newest,
    semver_key,
    training_document_hashes,
    visible_clause,
)
from viz.market.screening import (
    CatalogueEntry,
    ScreeningLimits,
    ScreeningReport,
    Upload,
    screen_upload,
)
from viz.models.loading import ensure_cached
from viz.models.registry import get_base_model
from viz.store.blobs import put_blob
from viz.store.schema import (
    Account,
    Adapter,
    AdapterTag,
    AdapterVersion,
    BaseModel,
    Document,
    Takedown,
    utc_now,
)

__all__ = [
    "PublishRequest",
    "approve_version",
    "find_version",
    "get_adapter",
    "publish_adapter",
    "restore_version",
    "search_adapters",
    "takedown_version",
]

NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,62}[a-z0-9]$")
PRICE_MAX_MICRO = 10**12
VISIBILITIES = ("public", "private")


@dataclass(frozen=True)
class PublishRequest:
    name: str
    version: str
    licence: str
    price_in_micro: int
    price_out_micro: int
    base_id: str | None = None
    parent: str | None = None
    tags: tuple[str, ...] = ()
    visibility: str = "public"
    description: str = ""


def publish_adapter(
    session: Session,
    blobs_dir: Path,
    models_dir: Path,
    folder: Path,
    request: PublishRequest,
    *,
    owner: Account,
    limits: ScreeningLimits = ScreeningLimits(),
) -> tuple[AdapterVersion, ScreeningReport]:
    """Screen the PEFT folder and, unless rejected, add it to the catalogue.

    Raises:
        InvalidInput: bad name, version, licence, price, parent or base; a parent chain deeper
            than serving applies (`hierarchy.PARENT_DEPTH_MAX`); or a rejected upload (the
            message lists each rule broken).
        Conflict: the version exists, or the parent chain would loop.
        Forbidden: the name belongs to another creator.
        NotFound: unknown base or parent.
    """
    licence = _check_request(request)
    base_id = request.base_id or _base_named_by(folder)
    base = get_base_model(session, base_id)
    adapter = session.scalar(select(Adapter).where(Adapter.name == request.name))
    parent = _resolve_parent(session, request.name, request.parent, adapter, base.id)
    if adapter is not None:
        _check_new_version(adapter, request, owner, base.id)
    report, upload = screen_upload(
        folder,
        base_id=base.id,
        base_weights_sha256=base.weights_sha256,
        base_folder=ensure_cached(base, models_dir),
        catalogue=_catalogue(session, base.id),
        owner_id=owner.id,
        limits=limits,
    )
    if report.status == "rejected":
        raise InvalidInput(f"upload refused, nothing stored: {'; '.join(report.problems())}")
    version = _store_version(session, blobs_dir, folder, request, licence, report, upload)
    if adapter is None:
        adapter = Adapter(
            name=request.name,
            owner_id=owner.id,
            base_id=base.id,
            visibility=request.visibility,
            description=request.description,
            tags=[AdapterTag(tag=t) for t in sorted(set(request.tags))],
        )
        session.add(adapter)
    adapter.parent = parent
    version.adapter = adapter
    session.add(version)
    session.flush()
    append_entry(session, "publish", _publish_entry(version, owner, base, parent, report))
    return version, report


def _check_new_version(
    adapter: Adapter, request: PublishRequest, owner: Account, base_id: str
) -> None:
    """A new version of an existing adapter: its owner's, on its base, not yet published."""
    if adapter.owner_id != owner.id:
        raise Forbidden(
            f"adapter {request.name!r} belongs to {adapter.owner.name}; publish under another name"
        )
    if adapter.base_id != base_id:
        raise InvalidInput(
            f"adapter {request.name!r} is on base {adapter.base_id}, not "
            f"{base_id}; publish it under another name"
        )
    if any(v.version == request.version for v in adapter.versions):
        raise Conflict(
            f"{request.name}@{request.version} is already published and "
            "versions are immutable; bump the version (e.g. 1.0.1)"
        )


def _store_version(
    session: Session,
    blobs_dir: Path,
    folder: Path,
    request: PublishRequest,
    licence: str,
    report: ScreeningReport,
    upload: Upload,
) -> AdapterVersion:
    """The weights and config stored as blobs; the version row (not yet added)."""
    weights = folder / "adapter_model.safetensors"
    weights_sha256, _ = put_blob(blobs_dir, weights.read_bytes())
    put_blob(blobs_dir, (folder / "adapter_config.json").read_bytes())
    card = folder / "README.md"
    return AdapterVersion(
        version=request.version,
        licence=licence,
        price_in_micro=request.price_in_micro,
        price_out_micro=request.price_out_micro,
        status=report.status,
        weights_sha256=weights_sha256,
        config_json=json.dumps(upload.config),
        manifest_json=json.dumps(upload.manifest or {}),
        card=card.read_text() if card.is_file() else "",
        rank=upload.rank,
        size_bytes=upload.size_bytes,
        update_norm=upload.update_norm,
        sketch=upload.sketch,
        screening_json=report.to_json(),
    )


def _publish_entry(
    version: AdapterVersion,
    owner: Account,
    base: BaseModel,
    parent: Adapter | None,
    report: ScreeningReport,
) -> dict[str, Any]:
    """The public log's record of a publish."""
    return {
        "adapter": version.adapter.name,
        "version": version.version,
        "creator": owner.name,
        "base": base.id,
        "base_weights_sha256": base.weights_sha256,
        "weights_sha256": version.weights_sha256,
        "licence": version.licence,
        "price_in_micro": version.price_in_micro,
        "price_out_micro": version.price_out_micro,
        "parent": parent.name if parent else None,
        "status": report.status,
        "screening": [[c.stage, c.outcome] for c in report.checks],
    }


def get_adapter(session: Session, name: str) -> Adapter:
    adapter = session.scalar(
        select(Adapter)
        .where(Adapter.name == name)
        .options(selectinload(Adapter.versions), selectinload(Adapter.tags))
    )
    if adapter is None:
        raise NotFound(
            f"no adapter named {name!r} in the catalogue; search with: viz market search TEXT"
        )
    return adapter


def find_version(session: Session, reference: str) -> AdapterVersion:
    """`name@version`, or `name` for its newest version."""
    name, _, wanted = reference.partition("@")
    adapter = get_adapter(session, name)
    versions = [v for v in adapter.versions if not wanted or v.version == wanted]
    if not versions:
        known = ", ".join(v.version for v in adapter.versions) or "none"
        raise NotFound(f"{name} has no version {wanted!r} (versions: {known})")
    found = newest(versions)
    assert found is not None
    return found


def search_adapters(
    session: Session,
    *,
    text: str = "",
    tags: tuple[str, ...] = (),
    base_id: str | None = None,
    licence: str | None = None,
    price_out_max_micro: int | None = None,
    include_unusable: bool = False,
    viewer: Account | None = None,
    limit: int = 100,
) -> list[AdapterVersion]:
    """Newest usable version of each matching adapter, cheapest output price first."""
    query = (
        select(AdapterVersion)
        .join(Adapter)
        .options(
            selectinload(AdapterVersion.adapter).selectinload(Adapter.tags),
            # Search lists; the heavy columns load only if a caller touches them.
            defer(AdapterVersion.sketch),
            defer(AdapterVersion.screening_json),
            defer(AdapterVersion.manifest_json),
            defer(AdapterVersion.config_json),
            defer(AdapterVersion.card),
        )
    )
    if text:
        pattern = f"%{text.lower()}%"
        query = query.where(
            or_(
                Adapter.name.ilike(pattern),
                Adapter.description.ilike(pattern),
                AdapterVersion.card.ilike(pattern),
            )
        )
    for tag in tags:
        query = query.where(Adapter.tags.any(AdapterTag.tag == tag))
    if base_id:
        query = query.where(Adapter.base_id == base_id)
    if licence:
        query = query.where(AdapterVersion.licence == normalise_licence(licence))
    if price_out_max_micro is not None:
        query = query.where(AdapterVersion.price_out_micro <= price_out_max_micro)
    if not include_unusable:
        query = query.where(AdapterVersion.status.in_(USABLE))
    query = query.where(visible_clause(viewer))
    newest: dict[int, AdapterVersion] = {}
    for version in session.scalars(query):
        current = newest.get(version.adapter_id)
        if current is None or semver_key(version) > semver_key(current):
            newest[version.adapter_id] = version
    found = sorted(newest.values(), key=lambda v: (v.price_out_micro, v.adapter.name))
    return found[:limit]


def approve_version(session: Session, reference: str, *, by: Account) -> AdapterVersion:
    if not by.is_admin:
        raise Forbidden(f"only an admin can approve a pending version; {by.name} is not one")
    version = find_version(session, reference)
    if version.status != "pending":
        raise Conflict(f"{_label(version)} is {version.status}, not pending")
    version.status = "approved"
    append_entry(
        session,
        "approve",
        {"adapter": version.adapter.name, "version": version.version, "by": by.name},
    )
    return version


def takedown_version(
    session: Session, reference: str, *, reason: str, notice_from: str, by: Account
) -> list[AdapterVersion]:
    """Make `name@version` (or every version of `name`) unavailable for new use at once.

    Allowed for an admin or the owner of a document the adapter was trained on.
    """
    name, _, wanted = reference.partition("@")
    adapter = get_adapter(session, name)
    versions = [v for v in adapter.versions if not wanted or v.version == wanted]
    if not versions:
        raise NotFound(f"{name} has no version {wanted!r}")
    if not reason.strip() or not notice_from.strip():
        raise InvalidInput("a takedown needs --reason and --notice-from (who sent the notice)")
    for version in versions:
        if not (by.is_admin or by.id in _document_owner_ids(session, version)):
            raise Forbidden(
                f"{by.name} may not take down {_label(version)}: only an admin or "
                "the owner of a document it was trained on"
            )
    done = []
    for version in versions:
        if version.status == "taken_down":
            continue
        session.add(
            Takedown(
                version_id=version.id,
                reason=reason,
                notice_from=notice_from,
                by_account_id=by.id,
                status_before=version.status,
            )
        )
        version.status = "taken_down"
        append_entry(
            session,
            "takedown",
            {
                "adapter": name,
                "version": version.version,
                "reason": reason,
                "notice_from": notice_from,
                "by": by.name,
            },
        )
        done.append(version)
    if not done:
        raise Conflict(f"{reference} is already taken down")
    return done


def restore_version(
    session: Session, reference: str, *, reason: str, by: Account
) -> AdapterVersion:
    """Restore a taken-down version after a counter-notice (admin only)."""
    if not by.is_admin:
        raise Forbidden(f"only an admin can restore; {by.name} is not one")
    version = find_version(session, reference)
    takedown = session.scalar(
        select(Takedown).where(Takedown.version_id == version.id, Takedown.restored_at.is_(None))
    )
    if version.status != "taken_down" or takedown is None:
        raise Conflict(f"{_label(version)} is {version.status}, not taken down")
    takedown.restored_at, takedown.restore_reason = utc_now(), reason
    version.status = takedown.status_before
    append_entry(
        session,
        "restore",
        {
            "adapter": version.adapter.name,
            "version": version.version,
            "reason": reason,
            "by": by.name,
        },
    )
    return version


def _check_request(request: PublishRequest) -> str:
    problems = []
    if not NAME.match(request.name):
        problems.append(f"name {request.name!r} must be 3-64 chars of a-z 0-9 . _ -")
    if not SEMVER.match(request.version):
        problems.append(f"version {request.version!r} is not semver (e.g. 1.0.0)")
    for label, price in (
        ("--price-in", request.price_in_micro),
        ("--price-out", request.price_out_micro),
    ):
        if not 0 <= price <= PRICE_MAX_MICRO:
            problems.append(
                f"{label} {price} must be 0..{PRICE_MAX_MICRO} micro-units per 1,000 tokens"
            )
    if request.visibility not in VISIBILITIES:
        problems.append(f"visibility {request.visibility!r} is not public or private")
    licence = ""
    try:
        licence = normalise_licence(request.licence)
    except InvalidInput as error:
        problems.append(error.message)
    if problems:
        raise InvalidInput("; ".join(problems))
    return licence


def _base_named_by(folder: Path) -> str:
    try:
        manifest = json.loads((folder / "viz-manifest.json").read_text())
        return str(manifest["base"]["id"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        config = json.loads((folder / "adapter_config.json").read_text())
        return str(config["base_model_name_or_path"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise InvalidInput(
            f"{folder}: cannot tell which base the adapter is for; pass --base "
            "ID (see viz models list)"
        ) from error


def _resolve_parent(
    session: Session, name: str, parent_name: str | None, adapter: Adapter | None, base_id: str
) -> Adapter | None:
    if parent_name is None:
        return adapter.parent if adapter is not None else None
    parent = get_adapter(session, parent_name)
    if parent.base_id != base_id:
        raise InvalidInput(f"parent {parent_name!r} is on base {parent.base_id}, not {base_id}")
    check_parent_chain(session, adapter, name, parent)
    return parent


def _catalogue(session: Session, base_id: str) -> list[CatalogueEntry]:
    rows = session.scalars(
        select(AdapterVersion)
        .join(Adapter)
        .where(Adapter.base_id == base_id, AdapterVersion.status != "rejected")
    )
    return [CatalogueEntry(_label(v), v.adapter.owner_id, v.update_norm, v.sketch) for v in rows]


def _document_owner_ids(session: Session, version: AdapterVersion) -> set[int]:
    hashes = training_document_hashes(version)
    if not hashes:
        return set()
    return set(session.scalars(select(Document.owner_id).where(Document.sha256.in_(hashes))))


def _label(version: AdapterVersion) -> str:
    return f"{version.adapter.name}@{version.version}"
