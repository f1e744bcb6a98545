"""One vLLM OpenAI server, as the vLLM engine talks to it: its models, runtime LoRA loading, and
streamed completions of token-id prompts.

    server = VllmServer("http://127.0.0.1:8001")
    server.served()                                  # -> ServedModel(name, root, max_model_len)
    server.load_adapter("viz-0123abcd", folder)      # POST /v1/load_lora_adapter
    for chunk in server.complete({...}, cancelled):  # POST /v1/completions, stream=True

Every failure is a `VizError` naming the server and what to do; the server's own error text is
kept in the message.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from viz.errors import InvalidInput, LimitExceeded, Overloaded, VizError

__all__ = ["EngineUnavailable", "ServedModel", "VllmServer"]

CONNECT_TIMEOUT_S = 5.0
HEALTH_TIMEOUT_S = 2.0
LOAD_TIMEOUT_S = 120.0  # loading a LoRA reads its weights: seconds for large ranks
READ_TIMEOUT_S = 600.0  # between two streamed chunks


class EngineUnavailable(Overloaded):
    """An engine server cannot be reached or failed mid-request (HTTP 503; retry: another may
    serve)."""

    http_status = 503
    openai_type = "server_error"
    openai_code = "engine_unavailable"


@dataclass(frozen=True)
class ServedModel:
    """What a vLLM server says it serves (`GET /v1/models`, the base model's entry)."""

    name: str  # the name requests use (--served-model-name)
    root: str  # the folder or hub id it loaded
    max_model_len: int | None
    parent: str | None = None  # a LoRA adapter's base; None for a base model


class VllmServer:
    """A client of one vLLM OpenAI server, safe to share between threads."""

    def __init__(self, url: str) -> None:
        if not url.startswith(("http://", "https://")):
            raise InvalidInput(f"vLLM server {url!r} is not an http(s) URL (http://HOST:PORT)")
        self.url = url.rstrip("/").removesuffix("/v1")
        self._http = httpx.Client(
            base_url=self.url,
            timeout=httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S),
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
        )

    def __repr__(self) -> str:
        return f"VllmServer({self.url!r})"

    def healthy(self) -> bool:
        """Whether `GET /health` answers 200 within HEALTH_TIMEOUT_S."""
        try:
            return self._http.get("/health", timeout=HEALTH_TIMEOUT_S).status_code == 200
        except (httpx.HTTPError, RuntimeError):  # RuntimeError: the client was closed
            return False

    def served(self) -> list[ServedModel]:
        """The models the server lists: its base first, then the LoRA adapters it has loaded."""
        body = self._json("GET", "/v1/models", timeout=HEALTH_TIMEOUT_S * 5)
        return [
            ServedModel(
                row["id"],
                str(row.get("root") or row["id"]),
                row.get("max_model_len"),
                row.get("parent"),
            )
            for row in body.get("data", [])
        ]

    def load_adapter(self, name: str, folder: Path) -> None:
        """Register the PEFT folder as LoRA `name` (needs VLLM_ALLOW_RUNTIME_LORA_UPDATING=1 on
        the server). Loading a name the server already has is not an error."""
        try:
            response = self._http.post(
                "/v1/load_lora_adapter",
                json={"lora_name": name, "lora_path": str(folder)},
                timeout=LOAD_TIMEOUT_S,
            )
        except httpx.HTTPError as error:
            raise self._unavailable(error) from error
        if response.status_code == 200 or "already been loaded" in response.text:
            return
        if response.status_code == 404:
            raise InvalidInput(
                f"vLLM server {self.url} cannot load adapters at run time: start it with "
                "VLLM_ALLOW_RUNTIME_LORA_UPDATING=1 and --enable-lora"
            )
        raise InvalidInput(f"vLLM server {self.url} refused adapter {name}: {_detail(response)}")

    def unload_adapter(self, name: str) -> None:
        """Forget LoRA `name` (best effort: a server that no longer has it is fine)."""
        with contextlib.suppress(httpx.HTTPError):
            self._http.post(
                "/v1/unload_lora_adapter", json={"lora_name": name}, timeout=LOAD_TIMEOUT_S
            )

    def complete(self, body: dict[str, Any], cancelled: threading.Event) -> Iterator[dict]:
        """Stream `POST /v1/completions` (`body` gets stream=True): each parsed chunk, until the
        server ends the stream or `cancelled` is set (closing the connection aborts the request
        on the server)."""
        body = {**body, "stream": True}
        try:
            with self._http.stream("POST", "/v1/completions", json=body) as response:
                if response.status_code != 200:
                    response.read()
                    raise _refused(self.url, response)
                for line in response.iter_lines():
                    if cancelled.is_set():
                        return
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        return
                    chunk = json.loads(data)
                    if "error" in chunk and "choices" not in chunk:
                        raise VizError(f"vLLM server {self.url} failed: {chunk['error']}")
                    yield chunk
        except httpx.HTTPError as error:
            raise self._unavailable(error) from error

    def close(self) -> None:
        self._http.close()

    def _json(self, method: str, path: str, *, timeout: float) -> Any:
        try:
            response = self._http.request(method, path, timeout=timeout)
        except httpx.HTTPError as error:
            raise self._unavailable(error) from error
        if response.status_code != 200:
            raise _refused(self.url, response)
        return response.json()

    def _unavailable(self, error: Exception) -> EngineUnavailable:
        return EngineUnavailable(
            f"vLLM server {self.url} is unreachable or stopped answering ({type(error).__name__}:"
            f" {error}); check that it runs, or retry: another server may serve the request"
        )


def _refused(url: str, response: httpx.Response) -> VizError:
    detail = _detail(response)
    if response.status_code == 400 and "maximum context length" in detail:
        return LimitExceeded(f"vLLM server {url}: {detail}")
    if response.status_code in (400, 404, 422):
        return InvalidInput(f"vLLM server {url} refused the request: {detail}")
    if response.status_code in (429, 503):
        return EngineUnavailable(f"vLLM server {url} is busy ({response.status_code}): {detail}")
    return VizError(f"vLLM server {url} answered {response.status_code}: {detail}")


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500]
    error = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(error, dict):
        return str(error.get("message") or error)[:500]
    return str(error)[:500]
