"""Publishing, for a logged-in creator:

    GET  /publish, POST /publish         upload a PEFT adapter: screened, then listed

The upload's size is checked from its Content-Length before a byte is read; its files are
saved under our own names in a temporary folder, then published and profiled for routing.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import Engine as Database
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.datastructures import UploadFile as StarletteUploadFile

from viz.errors import InvalidInput, PayloadTooLarge, Unauthenticated, VizError
from viz.market.catalogue import PublishRequest
from viz.market.screening import ScreeningLimits
from viz.rag.cache import load_embedder_cached
from viz.routing.publish import publish_with_profile
from viz.store.database import session_scope
from viz.store.schema import Adapter, BaseModel
from viz.web._page import checked_form, render, secure, visit

__all__ = ["UPLOAD_BYTES_MAX", "UPLOAD_FILES", "PublishPages", "publish_router"]

UPLOAD_FILES = {  # form field -> the only name it is saved under
    "weights": "adapter_model.safetensors",
    "config": "adapter_config.json",
    "manifest": "viz-manifest.json",
    "card": "README.md",
}
UPLOAD_BYTES_MAX = ScreeningLimits().adapter_bytes_max + 4 * 1024 * 1024
UPLOAD_FIELDS_MAX = 20
TAGS_MAX = 20


class PublishPages:
    """The handlers, over one database; blobs and base weights live in `blobs_dir` and
    `models_dir`."""

    def __init__(self, database: Database, blobs_dir: Path, models_dir: Path) -> None:
        self.database = database
        self.blobs_dir = blobs_dir
        self.models_dir = models_dir

    def publish_form(self, request: Request) -> Response:
        with session_scope(self.database) as session:
            seen = visit(request, session)
            if seen.account is None:
                return RedirectResponse("/login?next=/publish", status_code=303)
            return render(request, "publish.html", seen, form={}, **_choices(session))

    async def publish(self, request: Request) -> Response:
        declared = request.headers.get("content-length", "")
        if not (declared.isascii() and declared.isdigit()):
            raise PayloadTooLarge(
                "an upload must declare its Content-Length; send it from the form"
            )
        if int(declared) > UPLOAD_BYTES_MAX:
            raise PayloadTooLarge(
                f"the upload is {int(declared):,} bytes; the most accepted is "
                f"{UPLOAD_BYTES_MAX:,} (the weights' limit plus 4 MiB for the other files)"
            )
        async with request.form(max_files=len(UPLOAD_FILES), max_fields=UPLOAD_FIELDS_MAX) as form:
            fields = {k: v for k, v in form.items() if isinstance(v, str)}
            with tempfile.TemporaryDirectory(prefix="viz-upload-") as folder:
                for field, filename in UPLOAD_FILES.items():  # our names, never the client's
                    upload = form.get(field)
                    if isinstance(upload, StarletteUploadFile) and upload.filename:
                        with open(Path(folder) / filename, "wb") as out:
                            shutil.copyfileobj(upload.file, out, 1024 * 1024)
                return await asyncio.to_thread(self._publish_upload, request, fields, Path(folder))

    def _publish_upload(self, request: Request, fields: dict[str, str], folder: Path) -> Response:
        with session_scope(self.database) as session:
            seen = checked_form(request, session, fields.get("csrf_token", ""))
            if seen.account is None:
                raise Unauthenticated("log in to publish")
            try:
                version, _ = publish_with_profile(
                    session,
                    self.blobs_dir,
                    self.models_dir,
                    folder,
                    _publish_request(fields),
                    owner=seen.account,
                    embedder=load_embedder_cached(),
                )
                target = f"/adapters/{version.adapter.name}?version={version.version}"
            except VizError as error:
                session.rollback()
                return render(
                    request,
                    "publish.html",
                    seen,
                    status=error.http_status,
                    error=error.message,
                    form=fields,
                    **_choices(session),
                )
        return secure(RedirectResponse(target, status_code=303))


def publish_router(database: Database, *, blobs_dir: Path, models_dir: Path) -> APIRouter:
    """The publish form and its upload."""
    pages = PublishPages(database, blobs_dir, models_dir)
    router = APIRouter(include_in_schema=False)
    router.add_api_route(
        "/publish", pages.publish_form, methods=["GET"], response_class=HTMLResponse
    )
    router.add_api_route("/publish", pages.publish, methods=["POST"], response_class=HTMLResponse)
    return router


def _choices(session: Session) -> dict[str, Any]:
    """What the form offers: the bases, the adapters a new one may extend, the upload limit."""
    return {
        "bases": list(session.scalars(select(BaseModel.id).order_by(BaseModel.id))),
        "parents": list(session.scalars(select(Adapter.name).order_by(Adapter.name))),
        "upload_max": UPLOAD_BYTES_MAX,
    }


def _publish_request(fields: dict[str, str]) -> PublishRequest:
    """The publish form's fields as a request (publish_adapter checks the values)."""

    def price(field: str) -> int:
        value = fields.get(field, "").strip()
        if not (value.isascii() and value.isdigit()):
            raise InvalidInput(f"{field.replace('_', ' ')} {value!r} must be a whole number of µ")
        return int(value)

    return PublishRequest(
        name=fields.get("name", "").strip(),
        version=fields.get("version", "").strip(),
        licence=fields.get("licence", "").strip(),
        price_in_micro=price("price_in"),
        price_out_micro=price("price_out"),
        base_id=fields.get("base") or None,
        parent=fields.get("parent", "").strip() or None,
        tags=tuple(t.strip() for t in fields.get("tags", "").split(",") if t.strip())[:TAGS_MAX],
        visibility=fields.get("visibility", "public"),
        description=fields.get("description", "").strip()[:500],
    )
