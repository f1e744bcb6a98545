"""`viz generate`: answer a question with a base model, streaming tokens to the terminal."""

from __future__ import annotations

import sys
import time

import typer

from viz.api import generate as generate_stream
from viz.cli._context import state


def generate(
    context: typer.Context,
    question: str = typer.Argument(..., help="The question or instruction"),
    model: str | None = typer.Option(
        None, "--model", "-m", help="Base model id (default: the configured default)"
    ),
    system: str | None = typer.Option(None, help="System message"),
    max_tokens: int = typer.Option(256, help="Most tokens to generate"),
    temperature: float = typer.Option(0.0, help="0 = greedy (deterministic); up to 2"),
    top_p: float = typer.Option(1.0, help="Nucleus sampling mass, (0, 1]"),
    seed: int | None = typer.Option(None, help="Random seed for sampling"),
    stop: list[str] = typer.Option([], "--stop", help="Stop string (repeatable)"),
    precision: str = typer.Option("fp32", help="fp32 | bf16 | nf4"),
    stats: bool = typer.Option(False, "--stats", help="Print token counts and speed"),
) -> None:
    """Answer a question with a base model, offline, streaming the answer.

    Example: viz generate "What is the capital of France?" --max-tokens 32
    """
    stream = generate_stream(
        question,
        model=model,
        system=system,
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
        stop=tuple(stop),
        precision=precision,
        settings=state(context).settings,
    )
    started = time.perf_counter()
    for piece in stream:
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    if stats:
        seconds = time.perf_counter() - started
        typer.echo(
            f"[{stream.prompt_tokens} prompt + {stream.completion_tokens} completion "
            f"tokens, {stream.completion_tokens / max(seconds, 1e-9):.1f} tokens/s, "
            f"finish: {stream.finish_reason}]",
            err=True,
        )
