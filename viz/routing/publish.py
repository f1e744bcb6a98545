"""One publish path: screen and catalogue an adapter version, then build its domain profile.

    version, report = publish_with_profile(session, blobs_dir, models_dir, folder, request,
                                           owner=account, embedder=embedder)

Publishing (`viz.market.catalogue.publish_adapter`) and the routing profile
(`viz.routing.profiles.build_profile`) always go together: `viz market publish`, the web
/publish page and `viz eval routing` call this function, so every published version can be
routed to from the moment it is in the catalogue.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from viz.market.catalogue import PublishRequest, publish_adapter
from viz.market.screening import ScreeningLimits, ScreeningReport
from viz.routing.profiles import build_profile
from viz.store.schema import Account, AdapterVersion

__all__ = ["publish_with_profile"]


def publish_with_profile(
    session: Session,
    blobs_dir: Path,
    models_dir: Path,
    folder: Path,
    request: PublishRequest,
    *,
    owner: Account,
    embedder: Any,
    limits: ScreeningLimits = ScreeningLimits(),
) -> tuple[AdapterVersion, ScreeningReport]:
    """`publish_adapter`, then the version's domain profile (`version.profile_source` says
    what it was built from). Raises what `publish_adapter` raises."""
    version, report = publish_adapter(
        session, blobs_dir, models_dir, folder, request, owner=owner, limits=limits
    )
    build_profile(session, version, blobs_dir, embedder)
    return version, report
