"""`viz serve`: the OpenAI-compatible API (FastAPI + uvicorn)."""

from __future__ import annotations

from pathlib import Path

import typer

from viz.cli._context import state
from viz.config import Settings
from viz.errors import InvalidInput


def serve(
    context: typer.Context,
    host: str = typer.Option("127.0.0.1", help="Interface to listen on (loopback by default)"),
    port: int = typer.Option(8000, help="TCP port"),
    base: str | None = typer.Option(None, help="Base to load before the first request"),
    engine: str | None = typer.Option(
        None, help="builtin (Viz's own engine, the default) or vllm (vLLM servers, --vllm)"
    ),
    vllm: list[str] = typer.Option(  # noqa: B008 - typer reads the default
        [], "--vllm", help="A vLLM OpenAI server serving the base (repeat for several)"
    ),
    adapter_dir: Path | None = typer.Option(
        None, help="Where the vLLM engine writes adapters its servers read (shared at scale)"
    ),
) -> None:
    """Serve the OpenAI-compatible HTTP API, metered in the ledger, and the marketplace's
    pages (catalogue, dashboards, log, playground) at the same address.

    Example: viz serve --port 8000   (then open http://127.0.0.1:8000/ in a browser, or
    OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="viz_..."))

    At scale: viz serve --engine vllm --vllm http://gpu1:8001 --vllm http://gpu2:8001
    --adapter-dir /shared/viz-adapters   (see the README, "Serving at scale")
    """
    # deferred: the server and the app (FastAPI, pages) would cost every viz command
    import uvicorn

    # deferred: as above
    from viz.app import create_app

    cli = state(context)
    update: dict[str, object] = {}
    if engine is not None:
        update["serve_engine"] = engine
    if vllm:
        update["vllm_urls"] = vllm
        update.setdefault("serve_engine", "vllm")
    if adapter_dir is not None:
        update["vllm_adapter_dir"] = adapter_dir
    settings = _checked(cli.settings, update)
    app = create_app(settings, cli.engine())
    if base or settings.serve_engine == "vllm":  # vllm: check the servers before serving
        app.state.server.engine(base or settings.default_base_model, "fp32")
    typer.echo(f"Viz marketplace on http://{host}:{port}/ (log in with: viz account password NAME)")
    typer.echo(f"Viz API on http://{host}:{port}/v1 (OpenAPI spec: /openapi.json, docs: /docs)")
    uvicorn.run(app, host=host, port=port, log_level="info")


def _checked(settings: Settings, update: dict[str, object]) -> Settings:
    """`settings` with the flags' values, validated like the settings themselves."""
    merged = settings.model_dump() | update
    if merged["serve_engine"] not in ("builtin", "vllm"):
        raise InvalidInput(f"--engine {merged['serve_engine']!r}: use builtin or vllm")
    if merged["serve_engine"] == "vllm" and not merged["vllm_urls"]:
        raise InvalidInput("--engine vllm needs its servers: add --vllm http://HOST:PORT")
    return Settings.model_validate(merged)
