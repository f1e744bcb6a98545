"""`viz recommend`: the base variant and adapter chain that fit a task, a machine and a budget."""

from __future__ import annotations

import json

import typer

from viz.accounts import get_account
from viz.api import recommend_route
from viz.cli._context import session, state
from viz.models import get_base_model
from viz.routing.hardware import PRESETS, Hardware, detect_hardware, parse_hardware
from viz.routing.options import RouteRequest
from viz.routing.recommend import Recommendation


def recommend(
    context: typer.Context,
    query: str = typer.Argument("", help="What the model is for: a question or a task"),
    hardware: str | None = typer.Option(
        None,
        "--hardware",
        help=f"A preset ({', '.join(PRESETS)}) or numbers such as 'ram=4GB' or "
        "'gpu=24GB,ram=64GB,cores=16,bw=1000GB' (default: this machine, detected)",
    ),
    budget: int | None = typer.Option(
        None, help="Most micro-units per 1,000 tokens (in or out) the chain may cost"
    ),
    max_latency_ms: float | None = typer.Option(
        None, help="Longest acceptable time for a reply of --reply-tokens tokens"
    ),
    reply_tokens: int = typer.Option(128, help="Reply length the latency is estimated for"),
    context_tokens: int = typer.Option(
        2048, "--context", help="Context length the KV cache is sized for"
    ),
    base: str | None = typer.Option(None, help="Only this base (default: every base)"),
    account: str | None = typer.Option(None, help="Also consider this account's private ones"),
    calibrate: bool = typer.Option(
        False, "--calibrate", help="Measure this machine's speed first (cached per machine)"
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the recommendation as JSON"),
) -> None:
    """Recommend a base precision and an adapter chain (general -> language -> domain ->
    sub-domain) for a query, sized to the hardware, the budget and a latency limit; print two
    alternatives and why.

    Example: viz recommend "How is BLEU computed for this translation model?" --hardware
    laptop-8gb --budget 500
    """
    settings = state(context).settings
    if calibrate:
        _calibrate(context, base or settings.default_base_model)
        if not query:
            return
    profile = parse_hardware(hardware) if hardware else detect_hardware()
    request = RouteRequest(
        query,
        profile,
        budget_micro=budget,
        max_latency_ms=max_latency_ms,
        context_tokens=context_tokens,
        reply_tokens=reply_tokens,
        base=base,
    )
    with session(context) as database:
        caller = get_account(database, account) if account else None
        found = recommend_route(database, settings, request, caller=caller)
    if as_json:
        typer.echo(json.dumps(found.to_json(), indent=2))
        return
    _print_recommendation(found, profile)


def _calibrate(context: typer.Context, base: str) -> None:
    """Measure this machine's speed with `base` (cached per machine) and say what it found."""
    settings = state(context).settings
    # deferred: calibration runs the builtin engine (torch); only --calibrate needs it
    from viz.serving.engines.builtin.calibrate import calibrate as run_calibration

    with session(context) as database:
        record = get_base_model(database, base)
        database.expunge(record)
    calibration = run_calibration(
        record,
        settings.models_dir,
        settings.home,
        progress=lambda text: typer.echo(f"calibrating: {text}", err=True),
    )
    typer.echo(
        f"calibrated {calibration.described}: {calibration.bandwidth_gbs:g} GB/s; "
        + ", ".join(f"{p} {1 / s:.1f} tokens/s" for p, s in calibration.seconds_per_token.items())
        + "; per adapter: "
        + ", ".join(f"{p} +{o:.0%}" for p, o in calibration.adapter_overhead.items()),
        err=True,
    )


def _print_recommendation(found: Recommendation, profile: Hardware) -> None:
    choice = found.choice
    typer.echo(f"recommended for {profile.describe()}:")
    typer.echo(f"  model: {choice.model}")
    typer.echo(f"  base {choice.base_id}, precision {choice.precision}")
    for level in choice.chain:
        typer.echo(
            f"  {level.level:<10} {level.label} weight {level.weight:g} (score {level.score:.3f})"
        )
    typer.echo("why:")
    for line in found.why:
        typer.echo(f"  - {line}")
    typer.echo("alternatives:")
    for alternative in found.alternatives:
        typer.echo(
            f"  - {alternative.model} on {alternative.precision}: "
            f"{alternative.footprint.total / 1e6:,.0f} MB, "
            f"{alternative.speed.tokens_per_second:.1f} tokens/s, "
            f"{alternative.price_micro} per 1k tokens"
        )
