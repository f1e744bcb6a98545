"""The playground, for anyone with an API key:

    GET  /playground, POST /playground   try an adapter or a chain with your API key

A try calls the API's own `/v1/chat/completions` in process, so it is authenticated, metered
and paid exactly like any other request.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import Engine as Database

from viz.errors import InvalidInput, LimitExceeded, VizError
from viz.store.database import session_scope
from viz.web._page import Visit, checked_form, render, visit
from viz.web.views.catalogue import adapter_names

__all__ = [
    "PLAYGROUND_TOKENS_MAX",
    "PROMPT_CHARS_MAX",
    "PlaygroundPages",
    "playground_router",
]

PROMPT_CHARS_MAX = 4000
PLAYGROUND_TOKENS_MAX = 256
MODEL_CHARS_MAX = 200  # a `?model=` echoed back into the form
API_TIMEOUT_S = 600


class PlaygroundPages:
    """The handlers, over one database."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def playground_form(self, request: Request, model: str = "") -> Response:
        with session_scope(self.database) as session:
            seen = visit(request, session)
            models = adapter_names(session, seen.account)
            return render(
                request,
                "playground.html",
                seen,
                models=models,
                model=model[:MODEL_CHARS_MAX],
                max_tokens=64,
            )

    async def playground(
        self,
        request: Request,
        model: str = Form(""),
        prompt: str = Form(""),
        api_key: str = Form(""),
        max_tokens: int = Form(64),
        csrf_token: str = Form(""),
    ) -> Response:
        seen, models = await asyncio.to_thread(self._checked_visit, request, csrf_token)
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

    def _checked_visit(self, request: Request, csrf_token: str) -> tuple[Visit, list[str]]:
        """The visitor (after the CSRF check) and the adapters they may try, detached from
        the session so the async handler may read them."""
        with session_scope(self.database) as session:
            seen = checked_form(request, session, csrf_token)
            models = adapter_names(session, seen.account)
            session.expunge_all()
            return seen, models


def playground_router(database: Database) -> APIRouter:
    """The playground's form and its answer."""
    pages = PlaygroundPages(database)
    router = APIRouter(include_in_schema=False)
    router.add_api_route(
        "/playground", pages.playground_form, methods=["GET"], response_class=HTMLResponse
    )
    router.add_api_route(
        "/playground", pages.playground, methods=["POST"], response_class=HTMLResponse
    )
    return router


async def _ask_api(
    app: Any, api_key: str, model: str, prompt: str, max_tokens: int
) -> dict[str, Any]:
    """One chat completion through the app's own API (auth, metering and all), in process.

    Raises:
        InvalidInput: no API key was given.
        VizError: the API refused; with the API's message and HTTP status.
    """
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
            timeout=API_TIMEOUT_S,
        )
    body = reply.json()
    if reply.status_code != 200:
        error = VizError(body.get("error", {}).get("message", reply.text))
        error.http_status = reply.status_code  # the API's answer, passed on as it came
        raise error
    return {
        "text": body["choices"][0]["message"]["content"],
        "model": body["model"],
        "usage": body["usage"],
        "id": body["id"],
    }
