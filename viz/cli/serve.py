"""`viz serve`: the OpenAI-compatible API (FastAPI + uvicorn)."""

from __future__ import annotations

import typer

from viz.cli._context import state


def serve(
    context: typer.Context,
    host: str = typer.Option("127.0.0.1", help="Interface to listen on (loopback by default)"),
    port: int = typer.Option(8000, help="TCP port"),
    base: str | None = typer.Option(None, help="Base to load before the first request"),
) -> None:
    """Serve the OpenAI-compatible HTTP API, metered in the ledger, and the marketplace's
    pages (catalogue, dashboards, log, playground) at the same address.

    Example: viz serve --port 8000   (then open http://127.0.0.1:8000/ in a browser, or
    OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="viz_..."))
    """
    # deferred: the server and the app (FastAPI, pages) would cost every viz command
    import uvicorn

    # deferred: as above
    from viz.app import create_app

    cli = state(context)
    app = create_app(cli.settings, cli.engine())
    if base:
        app.state.server.engine(base, "fp32")
    typer.echo(f"Viz marketplace on http://{host}:{port}/ (log in with: viz account password NAME)")
    typer.echo(f"Viz API on http://{host}:{port}/v1 (OpenAPI spec: /openapi.json, docs: /docs)")
    uvicorn.run(app, host=host, port=port, log_level="info")
