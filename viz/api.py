"""The Python API: what the `viz` command does, callable from a program.

    from viz.api import generate
    stream = generate("What is QLoRA?", max_tokens=64)
    for piece in stream:
        print(piece, end="", flush=True)
    print(stream.finish_reason, stream.completion_tokens)

Loaded models are kept per (data folder, model, precision) for the life of the process.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from viz.config import Settings
from viz.models.generate import GenerationSettings, TokenStream, generate_text
from viz.models.loading import LoadedModel, load_model
from viz.models.registry import get_base_model
from viz.store.database import open_database, session_scope

__all__ = ["generate", "load_base"]


def load_base(
    model_id: str | None = None, *, precision: str = "fp32", settings: Settings | None = None
) -> LoadedModel:
    """Load a registered base model (the default one if `model_id` is None), cached in-process."""
    settings = settings or Settings()
    return _load(
        settings.database_url_resolved,
        settings.models_dir.resolve(),
        model_id or settings.default_base_model,
        precision,
    )


def generate(
    question: str,
    *,
    model: str | None = None,
    system: str | None = None,
    max_tokens: int = 256,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int | None = None,
    stop: tuple[str, ...] = (),
    precision: str = "fp32",
    settings: Settings | None = None,
) -> TokenStream:
    """Answer `question` with a base model; iterate the result to stream the text.

    Raises:
        InvalidInput, LimitExceeded: bad sampling options, or a prompt or answer over the limits.
        NotFound: unknown model id (the message lists the known ones).
    """
    settings = settings or Settings()
    options = GenerationSettings(max_tokens, temperature, top_p, seed, tuple(stop))
    options.check(max_tokens_limit=settings.generate_tokens_max)
    loaded = load_base(model, precision=precision, settings=settings)
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": question})
    return generate_text(
        loaded.model,
        loaded.tokenizer,
        messages,
        options,
        prompt_tokens_max=settings.prompt_tokens_max,
        max_tokens_limit=settings.generate_tokens_max,
    )


@cache
def _load(database_url: str, models_dir: Path, model_id: str, precision: str) -> LoadedModel:
    engine = open_database(database_url)
    try:
        with session_scope(engine) as session:
            record = get_base_model(session, model_id)
    finally:
        engine.dispose()
    return load_model(record, models_dir, precision=precision)
