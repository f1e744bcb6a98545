"""The marketplace's pages, served by `viz serve` beside the API: server-rendered, no build step.

    GET  /                               catalogue: search, filters, the domain tree
    GET  /adapters/NAME[?version=V]      card, licence, provenance, screening, chain, usage, proof
    GET  /documents/ID-or-SHA256         a document's provenance and the adapters trained on it
    GET  /log[?entry=N]                  the latest signed checkpoint; verify one entry
    GET  /playground, POST /playground   try an adapter or a chain with your API key
    GET  /publish, POST /publish         a creator uploads a PEFT adapter: screened, then listed
    GET  /login, POST /login, POST /logout, GET /signup, POST /signup
    GET  /dashboard/NAME/creator         earnings per adapter and document, payouts (NAME only)
    GET  /dashboard/NAME/consumer        balance, usage per adapter, API keys (NAME only)
    POST /dashboard/NAME/keys, POST /dashboard/NAME/keys/KEY_ID/revoke
    GET  /admin/takedowns                takedowns and restores (admins only)

Reading works without JavaScript (there is none); every POST needs its form's CSRF token. The
playground calls the API's own `/v1/chat/completions` in process, so a try is authenticated,
metered and paid exactly like any other request.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fastapi import APIRouter, FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy import Engine as Database
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.datastructures import UploadFile as StarletteUploadFile

from viz.accounts.accounts import create_account
from viz.accounts.keys import create_api_key, revoke_api_key
from viz.api import load_embedder_cached
from viz.config import Settings
from viz.errors import (
    Forbidden,
    InvalidInput,
    LimitExceeded,
    NotFound,
    Unauthenticated,
    VizError,
)
from viz.market.catalogue import PublishRequest
from viz.market.screening import ScreeningLimits
from viz.routing.publish import publish_with_profile
from viz.store.database import session_scope
from viz.store.schema import Account, Adapter, BaseModel
from viz.web import views
from viz.web.auth import Throttle, check_csrf, log_in, log_out, session_account, set_password
from viz.web.charts import line_chart

__all__ = ["add_pages", "error_page", "is_page"]

HERE = Path(__file__).parent
SESSION_COOKIE = "viz_session"
CSRF_COOKIE = "viz_csrf"
PROMPT_CHARS_MAX = 4000
PLAYGROUND_TOKENS_MAX = 256
SIGNUPS_PER_HOUR_MAX = 30
UPLOAD_FILES = {  # form field -> the only name it is saved under
    "weights": "adapter_model.safetensors",
    "config": "adapter_config.json",
    "manifest": "viz-manifest.json",
    "card": "README.md",
}
UPLOAD_BYTES_MAX = ScreeningLimits().adapter_bytes_max + 4 * 1024 * 1024
API_PREFIXES = ("/v1/", "/health", "/metrics", "/docs", "/redoc", "/openapi.json")
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}

templates = Jinja2Templates(directory=HERE / "templates")
templates.env.filters["money"] = lambda micro: f"{int(micro):,} µ"
templates.env.filters["short_hash"] = lambda value: f"{value[:12]}…" if value else ""


@dataclass
class Visit:
    """Who is looking: the logged-in account (or None) and the CSRF token their forms carry."""

    account: Account | None
    csrf: str
    new_csrf_cookie: str | None  # set on the response: a logged-out visitor's first form


def is_page(request: Request) -> bool:
    """Is this a page (answered in HTML) rather than the API (answered in JSON)?"""
    return not request.url.path.startswith(API_PREFIXES)


def error_page(request: Request, error: VizError) -> Response:
    """A VizError on a page: the same message the API would give, as a page."""
    if error.http_status == 401 and request.method == "GET":
        return RedirectResponse(f"/login?next={request.url.path}", status_code=303)
    response = templates.TemplateResponse(
        request,
        "error.html",
        {"visit": Visit(None, "", None), "status": error.http_status, "message": error.message},
        status_code=error.http_status,
    )
    return _secure(response)


def add_pages(app: FastAPI, settings: Settings, database: Database) -> None:
    """Serve the marketplace's pages and their stylesheet from `app`."""
    throttle = Throttle()
    signups: list[float] = []
    router = APIRouter(include_in_schema=False)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    def visit(request: Request, session: Session) -> Visit:
        found = session_account(session, request.cookies.get(SESSION_COOKIE))
        if found is not None:
            account, row = found
            return Visit(account, row.csrf_token, None)
        cookie = request.cookies.get(CSRF_COOKIE, "")
        if len(cookie) == 64:
            return Visit(None, cookie, None)
        fresh = secrets.token_hex(32)
        return Visit(None, fresh, fresh)

    def render(
        request: Request, template: str, visit: Visit, status: int = 200, **context: Any
    ) -> Response:
        response = templates.TemplateResponse(
            request, template, {"visit": visit, **context}, status_code=status
        )
        if visit.new_csrf_cookie:
            response.set_cookie(
                CSRF_COOKIE,
                visit.new_csrf_cookie,
                httponly=True,
                samesite="strict",
                secure=request.url.scheme == "https",
            )
        return _secure(response)

    def checked_form(request: Request, session: Session, token: str) -> Visit:
        """The visitor, after checking the form's CSRF token (a forged post gets 403)."""
        seen = visit(request, session)
        expected = seen.csrf if seen.new_csrf_cookie is None else None
        check_csrf(expected, token)
        return seen

    def own(session: Session, seen: Visit, name: str) -> Account:
        """The logged-in account, which must be `name`: a dashboard is its owner's alone."""
        if seen.account is None:
            raise Unauthenticated("log in to see your dashboard")
        if seen.account.name != name:  # admins too: they see takedowns, not wallets
            raise Forbidden(f"this dashboard belongs to {name!r}; yours is at /dashboard")
        account = session.scalar(select(Account).where(Account.name == name))
        if account is None:
            raise NotFound(f"no account named {name!r}")
        return account

    # --- reading --------------------------------------------------------------------------
    @router.get("/", response_class=HTMLResponse)
    def catalogue(
        request: Request,
        q: str = "",
        base: str = "",
        tag: str = "",
        licence: str = "",
        price_max: str = "",
        domain: str = "",
    ) -> Response:
        if price_max and not price_max.isdigit():
            raise InvalidInput(
                f"price_max {price_max!r} is not a whole number of micro-units per 1k tokens"
            )
        query = views.CatalogueQuery(
            text=q,
            base=base,
            tag=tag,
            licence=licence,
            price_max=int(price_max) if price_max else None,
            domain=domain,
        )
        with session_scope(database) as session:
            seen = visit(request, session)
            page = views.catalogue_page(session, query, seen.account)
            return render(request, "catalogue.html", seen, page=page)

    @router.get("/adapters/{name}", response_class=HTMLResponse)
    def adapter(request: Request, name: str, version: str = "") -> Response:
        with session_scope(database) as session:
            seen = visit(request, session)
            page = views.adapter_page(session, name, version, seen.account, settings.log_key_path)
            chart = line_chart({"requests": page.usage}, title=f"requests to {name} per day")
            return render(request, "adapter.html", seen, page=page, chart=chart)

    @router.get("/documents/{reference}", response_class=HTMLResponse)
    def document(request: Request, reference: str) -> Response:
        with session_scope(database) as session:
            seen = visit(request, session)
            page = views.document_page(session, reference, seen.account)
            return render(request, "document.html", seen, document=page)

    @router.get("/log", response_class=HTMLResponse)
    def log(request: Request, entry: str = "") -> Response:
        if entry and not entry.isdigit():
            raise InvalidInput(f"entry {entry!r} is not a log index (a whole number from 0)")
        with session_scope(database) as session:
            seen = visit(request, session)
            page = views.log_page(session, settings.log_key_path, int(entry) if entry else None)
            return render(request, "log.html", seen, page=page)

    # --- logging in -----------------------------------------------------------------------
    @router.get("/login", response_class=HTMLResponse)
    def login_form(request: Request, next: str = "/dashboard") -> Response:
        with session_scope(database) as session:
            return render(request, "login.html", visit(request, session), next=_local(next))

    @router.post("/login")
    def login(
        request: Request,
        name: str = Form(""),
        password: str = Form(""),
        csrf_token: str = Form(""),
        next: str = Form("/dashboard"),
    ) -> Response:
        with session_scope(database) as session:
            seen = checked_form(request, session, csrf_token)
            try:
                token = log_in(session, name.strip(), password, throttle=throttle)
            except VizError as error:  # wrong password, or throttled
                return render(
                    request,
                    "login.html",
                    seen,
                    status=error.http_status,
                    next=_local(next),
                    error=error.message,
                    name=name,
                )
        response = RedirectResponse(_local(next), status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            token,
            max_age=12 * 3600,
            httponly=True,
            samesite="lax",
            secure=request.url.scheme == "https",
        )
        return _secure(response)

    @router.post("/logout")
    def logout(request: Request, csrf_token: str = Form("")) -> Response:
        with session_scope(database) as session:
            checked_form(request, session, csrf_token)
            log_out(session, request.cookies.get(SESSION_COOKIE))
        response = RedirectResponse("/", status_code=303)
        response.delete_cookie(SESSION_COOKIE)
        return _secure(response)

    @router.get("/signup", response_class=HTMLResponse)
    def signup_form(request: Request) -> Response:
        with session_scope(database) as session:
            return render(request, "signup.html", visit(request, session))

    @router.post("/signup")
    def signup(
        request: Request,
        name: str = Form(""),
        display_name: str = Form(""),
        password: str = Form(""),
        csrf_token: str = Form(""),
    ) -> Response:
        now = time.monotonic()
        signups[:] = [t for t in signups if now - t < 3600]
        with session_scope(database) as session:
            seen = checked_form(request, session, csrf_token)
            try:
                if len(signups) >= SIGNUPS_PER_HOUR_MAX:
                    raise LimitExceeded("too many new accounts this hour; try again later")
                account = create_account(
                    session, name.strip(), display_name=display_name.strip()[:200]
                )
                set_password(session, account, password)
                signups.append(now)
            except VizError as error:
                session.rollback()
                return render(
                    request,
                    "signup.html",
                    seen,
                    status=error.http_status,
                    error=error.message,
                    name=name,
                    display_name=display_name,
                )
        name = name.strip()
        return login(
            request,
            name=name,
            password=password,
            csrf_token=csrf_token,
            next=f"/dashboard/{name}/consumer",
        )

    # --- dashboards -----------------------------------------------------------------------
    @router.get("/dashboard")
    def dashboard(request: Request) -> Response:
        with session_scope(database) as session:
            seen = visit(request, session)
            if seen.account is None:
                return RedirectResponse("/login?next=/dashboard", status_code=303)
            return RedirectResponse(f"/dashboard/{seen.account.name}/consumer", status_code=303)

    @router.get("/dashboard/{name}/creator", response_class=HTMLResponse)
    def creator(request: Request, name: str) -> Response:
        with session_scope(database) as session:
            seen = visit(request, session)
            account = own(session, seen, name)
            page = views.creator_dashboard(session, account)
            chart = line_chart(
                page.earnings, title=f"{name}'s earnings per day, per adapter and document"
            )
            return render(request, "creator.html", seen, owner=account, page=page, chart=chart)

    def consumer_page(
        request: Request, session: Session, seen: Visit, account: Account, **extra: Any
    ) -> Response:
        page = views.consumer_dashboard(session, account)
        chart = line_chart({"spent": page.spending}, title=f"{account.name}'s spending per day")
        response = render(
            request, "consumer.html", seen, owner=account, page=page, chart=chart, **extra
        )
        response.headers["Cache-Control"] = "no-store"  # a new key's secret is on this page
        return response

    @router.get("/dashboard/{name}/consumer", response_class=HTMLResponse)
    def consumer(request: Request, name: str) -> Response:
        with session_scope(database) as session:
            seen = visit(request, session)
            return consumer_page(request, session, seen, own(session, seen, name))

    @router.post("/dashboard/{name}/keys", response_class=HTMLResponse)
    def new_key(
        request: Request, name: str, label: str = Form(""), csrf_token: str = Form("")
    ) -> Response:
        with session_scope(database) as session:
            seen = checked_form(request, session, csrf_token)
            account = own(session, seen, name)
            key = create_api_key(
                session,
                account,
                label=label.strip(),
                keys_max=settings.api_keys_per_account_max,
            )
            session.flush()
            return consumer_page(request, session, seen, account, new_key=key)

    @router.post("/dashboard/{name}/keys/{key_id}/revoke")
    def revoke_key(request: Request, name: str, key_id: str, csrf_token: str = Form("")) -> Any:
        with session_scope(database) as session:
            seen = checked_form(request, session, csrf_token)
            revoke_api_key(session, key_id, account=own(session, seen, name))
        return RedirectResponse(f"/dashboard/{name}/consumer", status_code=303)

    @router.get("/admin/takedowns", response_class=HTMLResponse)
    def takedowns(request: Request) -> Response:
        with session_scope(database) as session:
            seen = visit(request, session)
            if seen.account is None:
                return RedirectResponse("/login?next=/admin/takedowns", status_code=303)
            if not seen.account.is_admin:
                raise Forbidden("only administrators see takedowns")
            return render(request, "takedowns.html", seen, takedowns=views.takedowns_page(session))

    # --- publishing -----------------------------------------------------------------------
    @router.get("/publish", response_class=HTMLResponse)
    def publish_form(request: Request) -> Response:
        with session_scope(database) as session:
            seen = visit(request, session)
            if seen.account is None:
                return RedirectResponse("/login?next=/publish", status_code=303)
            return render(request, "publish.html", seen, form={}, **publish_choices(session))

    def publish_choices(session: Session) -> dict[str, Any]:
        return {
            "bases": list(session.scalars(select(BaseModel.id).order_by(BaseModel.id))),
            "parents": list(session.scalars(select(Adapter.name).order_by(Adapter.name))),
            "upload_max": UPLOAD_BYTES_MAX,
        }

    @router.post("/publish", response_class=HTMLResponse)
    async def publish(request: Request) -> Response:
        declared = request.headers.get("content-length", "")
        if not declared.isdigit():
            raise LimitExceeded("an upload must declare its Content-Length; send it from the form")
        if int(declared) > UPLOAD_BYTES_MAX:
            raise LimitExceeded(
                f"the upload is {int(declared):,} bytes; the most accepted is "
                f"{UPLOAD_BYTES_MAX:,} (the weights' limit plus 4 MiB for the other files)"
            )
        async with request.form(max_files=len(UPLOAD_FILES), max_fields=20) as form:
            fields = {k: v for k, v in form.items() if isinstance(v, str)}
            with tempfile.TemporaryDirectory(prefix="viz-upload-") as folder:
                for field, filename in UPLOAD_FILES.items():  # our names, never the client's
                    upload = form.get(field)
                    if isinstance(upload, StarletteUploadFile) and upload.filename:
                        with open(Path(folder) / filename, "wb") as out:
                            shutil.copyfileobj(upload.file, out, 1024 * 1024)
                return await asyncio.to_thread(publish_upload, request, fields, Path(folder))

    def publish_upload(request: Request, fields: dict[str, str], folder: Path) -> Response:
        with session_scope(database) as session:
            seen = checked_form(request, session, fields.get("csrf_token", ""))
            if seen.account is None:
                raise Unauthenticated("log in to publish")
            try:
                version, _ = publish_with_profile(
                    session,
                    settings.blobs_dir,
                    settings.models_dir,
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
                    **publish_choices(session),
                )
        return _secure(RedirectResponse(target, status_code=303))

    # --- the playground -------------------------------------------------------------------
    @router.get("/playground", response_class=HTMLResponse)
    def playground_form(request: Request, model: str = "") -> Response:
        with session_scope(database) as session:
            seen = visit(request, session)
            models = views.adapter_names(session, seen.account)
            return render(
                request, "playground.html", seen, models=models, model=model[:200], max_tokens=64
            )

    @router.post("/playground", response_class=HTMLResponse)
    async def playground(
        request: Request,
        model: str = Form(""),
        prompt: str = Form(""),
        api_key: str = Form(""),
        max_tokens: int = Form(64),
        csrf_token: str = Form(""),
    ) -> Response:
        def check() -> tuple[Visit, list[str]]:
            with session_scope(database) as session:
                seen = checked_form(request, session, csrf_token)
                models = views.adapter_names(session, seen.account)
                session.expunge_all()
                return seen, models

        seen, models = await asyncio.to_thread(check)
        context: dict[str, Any] = {"models": models, "model": model, "prompt": prompt}
        context["max_tokens"] = max_tokens
        try:
            if not prompt.strip():
                raise InvalidInput("write a prompt to send")
            if len(prompt) > PROMPT_CHARS_MAX:
                raise LimitExceeded(
                    f"the prompt has {len(prompt)} characters; the playground takes "
                    f"{PROMPT_CHARS_MAX} (use the API for longer ones)"
                )
            if not 1 <= max_tokens <= PLAYGROUND_TOKENS_MAX:
                raise InvalidInput(f"max tokens must be 1..{PLAYGROUND_TOKENS_MAX}")
            context["answer"] = await _ask_api(
                request.app, api_key.strip(), model, prompt, max_tokens
            )
        except VizError as error:
            context["error"] = error.message
            return render(request, "playground.html", seen, status=error.http_status, **context)
        return render(request, "playground.html", seen, **context)

    app.include_router(router)


async def _ask_api(
    app: Any, api_key: str, model: str, prompt: str, max_tokens: int
) -> dict[str, Any]:
    """One chat completion through the app's own API (auth, metering and all), in process."""
    if not api_key:
        raise InvalidInput("paste one of your API keys (create one on your dashboard)")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://viz.local") as client:
        reply = await client.post(
            "/v1/chat/completions",
            headers={"Authorization": f"Bearer {api_key}"},
            json={
                "model": model or "auto",
                "messages": [{"role": "user", "content": prompt}],
                "max_tokens": max_tokens,
                "temperature": 0,
            },
            timeout=600,
        )
    body = reply.json()
    if reply.status_code != 200:
        error = VizError(body.get("error", {}).get("message", reply.text))
        error.http_status = reply.status_code
        raise error
    return {
        "text": body["choices"][0]["message"]["content"],
        "model": body["model"],
        "usage": body["usage"],
        "id": body["id"],
    }


def _publish_request(fields: dict[str, str]) -> PublishRequest:
    """The publish form's fields as a request (publish_adapter checks the values)."""

    def price(field: str) -> int:
        value = fields.get(field, "").strip()
        if not value.isdigit():
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
        tags=tuple(t.strip() for t in fields.get("tags", "").split(",") if t.strip())[:20],
        visibility=fields.get("visibility", "public"),
        description=fields.get("description", "").strip()[:500],
    )


def _local(target: str) -> str:
    """`target` if it is a path on this site, else the dashboard (no open redirects)."""
    if target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/dashboard"


def _secure(response: Response) -> Response:
    for header, value in SECURITY_HEADERS.items():
        response.headers.setdefault(header, value)
    return response
