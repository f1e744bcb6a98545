"""One generation in the builtin engine: filled by the engine thread, read through `pieces()`."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from viz.errors import VizError
from viz.models.generate import GenerationSettings, TextTracker
from viz.models.sampling import Scored
from viz.serving.engines import read_events
from viz.serving.engines.lora import LoadedAdapter

__all__ = ["Job", "Mix"]

Mix = list[tuple[LoadedAdapter, float]]


@dataclass
class Job:
    """One generation: filled by the engine thread, read by the caller through `pieces()`."""

    prompt_ids: list[int]
    settings: GenerationSettings
    mix: Mix
    _tracker: TextTracker
    finish_reason: str | None = None
    error: VizError | None = None
    submitted_at: float = field(default_factory=time.monotonic)
    first_token_at: float | None = None
    finished_at: float | None = None
    _events: queue.Queue[tuple[str, str]] = field(default_factory=queue.Queue)
    _cancelled: threading.Event = field(default_factory=threading.Event)
    _length: int = 0
    _last: int = 0
    _generator: Any = None
    _matcher: Any = None  # a grammar's matcher (viz.models.grammar) when the answer is JSON
    scored: list[Scored] = field(default_factory=list)  # with settings.logprobs
    prompt_scored: list[Scored] = field(default_factory=list)  # with settings.prompt_logprobs

    @property
    def prompt_tokens(self) -> int:
        return len(self.prompt_ids)

    @property
    def text(self) -> str:
        return self._tracker.text

    @property
    def completion_tokens(self) -> int:
        return self._tracker.completion_tokens

    def cancel(self) -> None:
        """Stop generating (the client went away); tokens made so far stay counted."""
        self._cancelled.set()

    def pieces(self, timeout_s: float = 600.0) -> Iterator[str]:
        """Text as it is generated; returns when the job ends, raises its error if it failed."""
        return read_events(self._events, timeout_s, self.cancel, lambda: self.error)
