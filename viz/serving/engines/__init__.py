"""Engines: what generates tokens behind the gateway, and the `Engine` protocol they share.

The gateway (`viz.serving`) never imports an engine's machinery: it asks `open_engine` for one
(which imports the implementation lazily) and talks to it only through this protocol:

    engine = open_engine("builtin", record, models_dir, precision="fp32", batch_max=8, ...)
    engine.limits                                 # ranks, precisions, batch and queue sizes
    composition = engine.compose(adapters)        # hot-load and check (name, weight) pairs
    generation = engine.submit(prompt_ids, settings, composition, choice=0)
    for piece in generation.pieces(): ...         # text pieces as they are generated
    generation.completion_tokens, generation.finish_reason   # "stop", "length", "cancelled"
    generation.scored                             # tokens and log-probabilities, if asked
    generation.cancel()

Implementations: `builtin` (transformers with multi-LoRA forward hooks, continuous batching)
and `vllm` (vLLM OpenAI servers; compositions stacked into one exact LoRA, see `stacking`).
"""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from viz.errors import InvalidInput, VizError
from viz.models.generate import GenerationSettings
from viz.models.sampling import Scored

__all__ = [
    "ENGINE_KINDS",
    "AdapterWeights",
    "VllmOptions",
    "Engine",
    "EngineLimits",
    "Generation",
    "open_adapter_cache",
    "open_engine",
    "read_events",
]

ENGINE_KINDS = ("builtin", "vllm")


@dataclass(frozen=True)
class AdapterWeights:
    """One adapter of a composition: its stored weights and config, and its mixing weight."""

    version_id: int
    label: str  # name@version, for messages and metrics
    weights_path: Path  # the safetensors blob
    config_json: str  # the PEFT config stored with the version
    weight: float


@dataclass(frozen=True)
class EngineLimits:
    """What an engine accepts: adapter ranks, base precisions, batch and queue sizes."""

    rank_max: int | None  # None: any rank
    precisions: tuple[str, ...]
    batch_max: int  # rows decoded together
    queue_max: int  # requests waiting before `submit` refuses (Overloaded)


@dataclass(frozen=True)
class VllmOptions:
    """Where the vLLM engine's servers are and what they take (`Settings.vllm_*`)."""

    urls: tuple[str, ...]
    adapter_dir: Path
    rank_max: int
    adapters_max: int
    dir_bytes_max: int = 20 * 1024**3


@runtime_checkable
class Generation(Protocol):
    """One submitted generation, read by the gateway while the engine fills it."""

    finish_reason: str | None  # None while running; "stop", "length", "cancelled" or "error"
    submitted_at: float  # time.monotonic()
    finished_at: float | None
    scored: list[Scored]  # each token with its log-probability, when settings.logprobs is set
    prompt_scored: list[Scored]  # the prompt's tokens after the first (settings.prompt_logprobs)

    @property
    def completion_tokens(self) -> int: ...

    def pieces(self, timeout_s: float = 600.0) -> Iterator[str]:
        """Text as it is generated; returns at the end, raises the VizError it failed with."""
        ...

    def cancel(self) -> None:
        """Stop generating; tokens made so far stay counted."""
        ...


@runtime_checkable
class Engine(Protocol):
    """Generates for one base model in one precision, any composition of adapters per row."""

    tokenizer: Any  # a Hugging Face tokenizer: the gateway renders and counts prompts with it

    @property
    def limits(self) -> EngineLimits: ...

    @property
    def waiting(self) -> int: ...

    @property
    def running(self) -> int: ...

    def compose(self, adapters: Sequence[AdapterWeights]) -> Any:
        """The adapters loaded (cached) and checked against the base, ready for `submit`.

        Raises:
            InvalidInput: an adapter does not fit this base (or the engine's limits).
            StorageCorrupt: its weights cannot be read.
        """
        ...

    def submit(
        self,
        prompt_ids: list[int],
        settings: GenerationSettings,
        composition: Any,
        *,
        choice: int = 0,
    ) -> Generation:
        """Queue a generation (`choice` varies the seed for n > 1).

        Raises:
            Overloaded: the queue is full, or the engine is shutting down.
        """
        ...

    def close(self, *, drain_s: float = 30.0) -> None:
        """Stop taking requests, let running ones finish for up to `drain_s`, cancel the rest."""
        ...


def open_adapter_cache(kind: str, bytes_max: int) -> Any:
    """The resident-adapter cache engines of `kind` share (`resident()` lists its labels);
    None for `vllm`, whose servers hold the adapters."""
    _check_kind(kind)
    if kind == "vllm":
        return None
    # deferred: the builtin engine's package pulls in its machinery only when serving starts
    from viz.serving.engines.builtin import AdapterSlots

    return AdapterSlots(bytes_max)


def open_engine(
    kind: str,
    record: Any,
    models_dir: Path,
    *,
    precision: str,
    batch_max: int,
    queue_max: int,
    adapter_cache: Any,
    vllm: VllmOptions | None = None,
) -> Engine:
    """Load base `record` in `precision` and start an engine of `kind` over it (for `vllm`:
    connect to the servers in `vllm`, which serve the base in their own precision).

    Raises:
        InvalidInput: an unknown kind or precision; for vllm, no server or another base.
        NotFound, StorageCorrupt: the model's files are missing or damaged.
    """
    _check_kind(kind)
    if kind == "vllm":
        if vllm is None or not vllm.urls:
            raise InvalidInput("the vLLM engine needs its servers: add --vllm http://HOST:PORT")
        # deferred: the client and the stacking need httpx and, to stack, torch
        from viz.serving.engines.vllm import open_vllm

        return open_vllm(
            record,
            models_dir,
            urls=list(vllm.urls),
            adapter_dir=vllm.adapter_dir,
            rank_max=vllm.rank_max,
            batch_max=batch_max,
            queue_max=queue_max,
            adapters_max=vllm.adapters_max,
            dir_bytes_max=vllm.dir_bytes_max,
        )
    # deferred: loading a model imports torch and transformers, the gateway does not
    from viz.serving.engines.builtin import open_builtin

    return open_builtin(
        record,
        models_dir,
        precision=precision,
        batch_max=batch_max,
        queue_max=queue_max,
        slots=adapter_cache,
    )


def read_events(
    events: queue.Queue[tuple[str, str]],
    timeout_s: float,
    cancel: Callable[[], None],
    failure: Callable[[], VizError | None],
) -> Iterator[str]:
    """A generation's text from the queue its engine fills with ("text", piece), ("error", "")
    or ("end", ""): what `Generation.pieces()` yields; cancels and raises when nothing comes
    for `timeout_s`, raises `failure()` on an error."""
    while True:
        try:
            kind, payload = events.get(timeout=timeout_s)
        except queue.Empty:
            cancel()
            raise VizError(f"generation produced nothing for {timeout_s:.0f} s") from None
        if kind == "text":
            yield payload
        elif kind == "error":
            error = failure()
            assert error is not None
            raise error
        else:
            return


def _check_kind(kind: str) -> None:
    if kind not in ENGINE_KINDS:
        raise InvalidInput(f"engine {kind!r} is not one of {', '.join(ENGINE_KINDS)}")
