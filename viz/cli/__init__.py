"""The `viz` command: one group per concern, `viz <noun> <verb>`.

Errors from the `VizError` tree become one-line messages and an exit code here, in one place.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, NoReturn

import typer
from pydantic import ValidationError
from typer.core import TyperGroup

from viz.cli import (
    account,
    adapters,
    db,
    documents,
    experiments,
    keys,
    ledger,
    log,
    market,
    models,
    rag,
    routing,
)
from viz.cli._context import CliState
from viz.cli.generate import generate
from viz.cli.reader import train_reader_command
from viz.cli.serve import serve
from viz.config import Settings
from viz.errors import InvalidInput, VizError

__all__ = ["app", "main"]

HELP = """Viz: turn licensed text into paid, composable LLM skills.

\b
Examples, one per group:
  viz account create ada                              accounts
  viz keys create --account ada                       API keys (shown once)
  viz documents add paper.txt --owner ada --licence CC-BY-4.0
  viz models show smollm2-135m-instruct               base models
  viz adapters train --name qa --account ada --tag nlp  train an adapter
  viz market search qasper --tag nlp                  the catalogue
  viz ledger topup bob 5000000 && viz ledger statement ada  money
  viz log export log.json && viz log verify log.json  the verifiable log
  viz generate "What is the capital of France?"       answer offline
  viz rag index papers --documents all                retrieval collections
  viz ask "What is QLoRA?" --collection papers        a cited, grounded answer
  viz market tree                                     the adapter hierarchy
  viz recommend "translate a contract" --hardware laptop-8gb  base + chain that fit
  viz eval rag --sample 20                            the RAG / rerank grid, scored
  viz serve --port 8000                               OpenAI-compatible API
  viz db upgrade                                      database schema

Data lives in VIZ_HOME (default ./.viz); the database is VIZ_DATABASE_URL
(default SQLite in VIZ_HOME).
"""


def fail(error: VizError) -> NoReturn:
    """Print `error: <message>` on stderr and leave with the error's exit code."""
    typer.echo(f"error: {error.message}", err=True)
    raise typer.Exit(error.exit_code)


class VizGroup(TyperGroup):
    """The root group: the single place where Viz errors become CLI messages."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except VizError as error:
            fail(error)


app = typer.Typer(
    cls=VizGroup,
    help=HELP,
    no_args_is_help=True,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)
app.add_typer(account.app, name="account")
app.add_typer(keys.app, name="keys")
app.add_typer(documents.app, name="documents")
app.add_typer(models.app, name="models")
adapters.app.command("train-reader")(train_reader_command)
app.add_typer(adapters.app, name="adapters")
app.add_typer(market.app, name="market")
app.add_typer(ledger.app, name="ledger")
app.add_typer(log.app, name="log")
app.add_typer(rag.app, name="rag")
app.add_typer(experiments.app, name="eval")
app.add_typer(db.app, name="db")
app.command("generate")(generate)
app.command("ask")(rag.ask)
app.command("recommend")(routing.recommend)
app.command("serve")(serve)


@app.callback()
def root(
    context: typer.Context,
    home: Path | None = typer.Option(None, "--home", help="Data folder (overrides VIZ_HOME)"),
) -> None:
    """Read the settings once, for every command."""
    try:
        settings = Settings() if home is None else Settings(home=home)
    except ValidationError as error:
        problems = "; ".join(
            f"VIZ_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in error.errors()
        )
        fail(InvalidInput(f"bad settings: {problems}"))
    context.obj = CliState(settings)


def main() -> None:
    _library_warnings_to_debug_log()
    app()


def _library_warnings_to_debug_log() -> None:
    """Libraries' warnings (deprecations, advisories) go to the `py.warnings` logger at debug
    level, not the user's terminal; `VIZ_LOG_LEVEL=DEBUG` shows them."""
    logging.captureWarnings(True)
    warnings_log = logging.getLogger("py.warnings")
    warnings_log.propagate = False
    if os.environ.get("VIZ_LOG_LEVEL", "").upper() == "DEBUG":
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("debug: %(message)s"))
        warnings_log.addHandler(handler)
        warnings_log.setLevel(logging.DEBUG)
    else:
        warnings_log.addHandler(logging.NullHandler())
