"""The inference engine: continuous batching of concurrent requests over one base model, each
row with its own adapters (see `multi_lora`).

One worker thread owns the model. Each turn of its loop it admits waiting requests (up to
`batch_max` rows): a new request is prefilled alone, then joins the running batch, whose KV
cache is left-padded to a common length with an attention mask over the padding. Every turn then
decodes one token for every row in one forward pass; finished or cancelled rows leave the batch
at once. Requests wait in a bounded queue: a full queue is refused (`Overloaded`), never grown.

    engine = BuiltinEngine(model, tokenizer, batch_max=8, queue_max=64)
    job = engine.submit(prompt_ids, GenerationSettings(max_tokens=64), mix=[(adapter, 0.7)])
    "".join(job.pieces()), job.finish_reason, job.completion_tokens
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Sequence
from typing import Any

from viz.errors import InvalidInput, Overloaded, VizError
from viz.models.generate import GenerationSettings, TextTracker, end_of_turn_ids
from viz.models.grammar import Matcher
from viz.models.loading import PRECISIONS
from viz.models.sampling import adjust, sample, score
from viz.serving.engines import AdapterWeights, EngineLimits
from viz.serving.engines.builtin.adapter_slots import AdapterSlots
from viz.serving.engines.builtin.job import Job, Mix
from viz.serving.engines.builtin.kv_cache import keep_rows, stack
from viz.serving.engines.builtin.multi_lora import LoraBatch, install_hooks
from viz.serving.engines.lora import LoadedAdapter, load_lora

__all__ = ["BuiltinEngine"]


class BuiltinEngine:
    """Continuous batching over one loaded base model (see the module docstring); an `Engine`."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        batch_max: int = 8,
        queue_max: int = 64,
        slots: AdapterSlots | None = None,
    ) -> None:
        self.model = model
        self.slots = slots if slots is not None else AdapterSlots(2**62)
        self.tokenizer = tokenizer
        self.batch_max = batch_max
        self.queue_max = queue_max
        self.stop_ids = end_of_turn_ids(model, tokenizer)
        self.device = next(model.parameters()).device
        self._current: list[LoraBatch | None] = [None]
        self._hooks = install_hooks(model, self._current)
        self._waiting: queue.Queue[Job] = queue.Queue(maxsize=queue_max)
        self._active: list[Job] = []
        self._cache: Any = None
        self._mask: Any = None
        self._batch_lora: LoraBatch | None = None  # the running rows' adapters
        self.hooked = {name for name, module in model.named_modules() if _is_hooked(name, module)}
        self._closing = threading.Event()
        self.steps = 0
        self.rows_decoded = 0
        self._thread = threading.Thread(target=self._run, name="viz-engine", daemon=True)
        self._thread.start()

    # --- the caller's side ------------------------------------------------------------------

    @property
    def limits(self) -> EngineLimits:
        return EngineLimits(
            rank_max=None,
            precisions=PRECISIONS,
            batch_max=self.batch_max,
            queue_max=self.queue_max,
        )

    def compose(self, adapters: Sequence[AdapterWeights]) -> Mix:
        """The adapters hot-loaded (cached by version in `slots`), checked against the base.

        Raises:
            InvalidInput: an adapter adapts modules this base does not have.
            StorageCorrupt: its weights cannot be read.
        """
        mix = []
        for use in adapters:

            def load(use: AdapterWeights = use) -> LoadedAdapter:
                return load_lora(
                    use.weights_path, use.config_json, version_id=use.version_id, label=use.label
                )

            adapter = self.slots.get(use.version_id, load)
            unknown = sorted(set(adapter.modules) - self.hooked)
            if unknown:
                raise InvalidInput(
                    f"{use.label} adapts {len(unknown)} module(s) this base does not have "
                    f"(e.g. {unknown[0]}); it was made for another base"
                )
            mix.append((adapter, use.weight))
        return mix

    def submit(
        self, prompt_ids: list[int], settings: GenerationSettings, mix: Mix, *, choice: int = 0
    ) -> Job:
        """Queue a generation.

        Raises:
            Overloaded: the queue is full (retry later).
        """
        if self._closing.is_set():
            raise Overloaded("the server is shutting down; retry on another instance")
        tracker = TextTracker(self.tokenizer, settings.stop, self.stop_ids)
        job = Job(list(prompt_ids), settings, list(mix), tracker)
        if settings.json_schema is not None:
            job._matcher = Matcher(self.tokenizer, settings.json_schema, self.stop_ids)
        if settings.seed is not None:
            import torch  # deferred: torch is heavy

            job._generator = torch.Generator().manual_seed(settings.seed + choice)
        try:
            self._waiting.put_nowait(job)
        except queue.Full:
            raise Overloaded(
                f"{self.queue_max} requests are already waiting; retry in a moment"
            ) from None
        return job

    @property
    def waiting(self) -> int:
        return self._waiting.qsize()

    @property
    def running(self) -> int:
        return len(self._active)

    def close(self, *, drain_s: float = 30.0) -> None:
        """Stop taking requests, let running ones finish for up to `drain_s`, cancel the rest."""
        self._closing.set()
        deadline = time.monotonic() + drain_s
        while (self._active or not self._waiting.empty()) and time.monotonic() < deadline:
            time.sleep(0.02)
        for job in list(self._active):
            job.cancel()
        while True:
            try:
                job = self._waiting.get_nowait()
            except queue.Empty:
                break
            self._finish(job, "cancelled")
        self._thread.join()
        for handle in self._hooks:
            handle.remove()

    # --- the engine thread ------------------------------------------------------------------

    def _run(self) -> None:
        import torch  # deferred: torch is heavy

        with torch.inference_mode():
            while not (self._closing.is_set() and not self._active and self._waiting.empty()):
                try:
                    self._admit()
                    if self._active:
                        self._step()
                except Exception as error:  # noqa: BLE001 - fail the rows, keep serving
                    self._fail_all(error)

    def _admit(self) -> None:
        joining: list[tuple[Job, Any]] = []
        while len(self._active) + len(joining) < self.batch_max:
            try:
                block = not self._active and not joining
                job = self._waiting.get(timeout=0.05) if block else self._waiting.get_nowait()
            except queue.Empty:
                break
            if job._cancelled.is_set():
                self._finish(job, "cancelled")
                continue
            try:
                cache = self._prefill(job)
            except Exception as error:  # noqa: BLE001 - this request fails, others go on
                self._fail(job, error)
                continue
            if job.finish_reason is None:
                joining.append((job, cache))
        if joining:
            try:
                self._join(joining)
            except Exception as error:  # noqa: BLE001 - the new rows fail, the batch goes on
                for job, _ in joining:
                    self._fail(job, error)

    def _prefill(self, job: Job) -> Any:
        import torch  # deferred: torch is heavy

        self._current[0] = LoraBatch.for_rows([job.mix])
        ids = torch.tensor([job.prompt_ids], device=self.device)
        keep = 0 if job.settings.prompt_logprobs is not None else 1  # 0: every position
        output = self.model(input_ids=ids, use_cache=True, logits_to_keep=keep)
        job._length = len(job.prompt_ids)
        if job.settings.prompt_logprobs is not None:
            top = job.settings.prompt_logprobs
            job.prompt_scored = [
                score(output.logits[0, position], token, top=top)
                for position, token in enumerate(job.prompt_ids[1:])
            ]
        self._choose(job, output.logits[0, -1])
        return output.cache

    def _join(self, joining: list[tuple[Job, Any]]) -> None:
        """Stack the new rows' caches onto the running batch's (see `kv_cache.stack`)."""
        running = (self._cache, self._mask) if self._active else None
        caches = [cache for _job, cache in joining]
        self._cache, self._mask = stack(running, caches, self.model.config, self.device)
        self._active.extend(job for job, _ in joining)
        self._batch_lora = LoraBatch.for_rows([job.mix for job in self._active])

    def _step(self) -> None:
        import torch  # deferred: torch is heavy

        rows = len(self._active)
        ids = torch.tensor([[job._last] for job in self._active], device=self.device)
        positions = torch.tensor([[job._length] for job in self._active], device=self.device)
        mask = torch.cat(
            [self._mask, torch.ones((rows, 1), dtype=torch.long, device=self.device)], dim=1
        )
        cache_position = torch.tensor([self._mask.shape[1]], device=self.device)
        self._current[0] = self._batch_lora  # a prefill in between set its own
        output = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            cache=self._cache,
            cache_position=cache_position,
            use_cache=True,
        )
        self._cache, self._mask = output.cache, mask
        self.steps += 1
        self.rows_decoded += rows
        logits = output.logits[:, -1]
        for row, job in enumerate(self._active):
            job._length += 1
            try:
                self._choose(job, logits[row])
            except Exception as error:  # noqa: BLE001 - this row fails, the others go on
                self._fail(job, error)
        keep = [row for row, job in enumerate(self._active) if job.finish_reason is None]
        if len(keep) < rows:
            self._shrink(keep)

    def _shrink(self, keep: list[int]) -> None:
        """Drop finished rows, and padding columns no remaining row needs."""
        self._active = [self._active[row] for row in keep]
        if not keep:
            self._cache = self._mask = self._batch_lora = None
            return
        self._mask = keep_rows(self._cache, self._mask, keep, self.device)
        self._batch_lora = LoraBatch.for_rows([job.mix for job in self._active])

    def _choose(self, job: Job, logits: Any) -> None:
        """Sample the row's next token from its logits (bias, penalties, grammar; see
        `viz.models.sampling`), score it if asked, and take it."""
        settings = job.settings
        adjusted = adjust(logits, settings, job.prompt_ids, job._tracker.generated)
        if job._matcher is not None:
            adjusted = job._matcher.mask(adjusted)
        token = sample(adjusted, settings, job._generator)
        if settings.logprobs is not None and token not in self.stop_ids:
            job.scored.append(score(logits, token, top=settings.logprobs))
        self._take(job, token)

    def _take(self, job: Job, token: int) -> None:
        """Record one sampled token: emit the text that is safe to show, or finish."""
        if job.first_token_at is None:
            job.first_token_at = time.monotonic()
        job._last = token
        piece, ended = job._tracker.push(token)
        complete = job._matcher is not None and job._matcher.advance(token)
        if piece:
            job._events.put(("text", piece))
        if ended or complete:
            self._finish(job, "stop")
        elif job.completion_tokens >= job.settings.max_tokens:
            self._finish(job, "length")
        elif job._cancelled.is_set():
            self._finish(job, "cancelled")

    def _finish(self, job: Job, reason: str) -> None:
        piece = job._tracker.rest()
        if piece:
            job._events.put(("text", piece))
        job.finish_reason = reason
        job.finished_at = time.monotonic()
        job._events.put(("done", reason))

    def _fail(self, job: Job, error: Exception) -> None:
        job.finished_at = time.monotonic()
        job.error = (
            error
            if isinstance(error, VizError)
            else VizError(f"generation failed: {type(error).__name__}: {error}")
        )
        job.finish_reason = "error"
        job._events.put(("error", ""))

    def _fail_all(self, error: Exception) -> None:
        for job in self._active:
            self._fail(job, error)
        self._active = []
        self._cache = self._mask = self._batch_lora = None


def _is_hooked(name: str, module: Any) -> bool:
    import torch  # deferred: torch is heavy

    return isinstance(module, torch.nn.Linear) and not name.endswith("lm_head")
