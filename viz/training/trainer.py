"""The training loop: a plain function, read top to bottom (nanoGPT's train.py, torchtune).

    result = train_adapter(name="qasper-nlp", account="ai2", base=record, base_folder=folder,
                           training_set=training_set, config=TrainingConfig(steps=30),
                           adapters_dir=home / "adapters")

The run lives in `<adapters_dir>/.<name>.partial/` until it finishes; only then is the adapter
folder renamed to `<adapters_dir>/<name>/`, so a half-written adapter never looks complete.
Checkpoints every `checkpoint_every` steps (and on Ctrl-C) let `resume=True` continue to the same
result as an uninterrupted run: the batch order is a function of (seed, step), and the random
state is saved with the optimizer state.
"""

from __future__ import annotations

import json
import math
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from viz.errors import Conflict, Interrupted, InvalidInput
from viz.store.schema import BaseModel
from viz.training._model import prepare_model, training_device
from viz.training.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    writing,
)
from viz.training.config import TrainingConfig, check_adapter_name
from viz.training.dataset import TrainingSet, fingerprint
from viz.training.evaluate import general_windows, perplexities, perplexity
from viz.training.manifest import MANIFEST_FILE, build_manifest, model_card

__all__ = [
    "Ranks",
    "Start",
    "TrainingResult",
    "batch_indexes",
    "current_ranks",
    "train_adapter",
]

Windows = Sequence[tuple[int, ...]]


@dataclass(frozen=True)
class TrainingResult:
    folder: Path
    manifest: dict[str, Any]


@dataclass(frozen=True)
class Start:
    """How a run that does not begin from a fresh LoRA begins, and what guards it.

    A continual update starts from the previous version's weights and replays some of its
    training windows; a child adapter can start from its parent (`viz.training.continual`,
    `viz.training.transfer`). `initialise` runs on the freshly wrapped model before step 0
    (a resumed run then loads its checkpoint over it); `extra_loss(model, batch, logits)` is
    added to the language-model loss at every step; `after_step(model)` runs after each
    optimizer step. `evaluations` are perplexity sets measured at the start and at the end;
    `record` goes into the manifest as `start`.
    """

    initialise: Callable[[Any], None]
    replay: tuple[tuple[int, ...], ...] = ()
    extra_loss: Callable[[Any, Any, Any], Any] | None = None
    after_step: Callable[[Any], None] | None = None
    evaluations: Mapping[str, Windows] = field(default_factory=dict)
    record: dict[str, Any] = field(default_factory=dict)


def train_adapter(
    *,
    name: str,
    account: str,
    base: BaseModel,
    base_folder: Path,
    training_set: TrainingSet,
    config: TrainingConfig,
    adapters_dir: Path,
    tokenizer: Any,
    resume: bool = False,
    show_progress: bool = True,
    start: Start | None = None,
) -> TrainingResult:
    """Train adapter `name` and write it to `<adapters_dir>/<name>/`.

    With `start`, the run begins from what it sets up (see `Start`) instead of a fresh LoRA.

    Raises:
        InvalidInput: bad config, or a resume that does not match the interrupted run.
        Conflict: the adapter exists, or an interrupted run exists and `resume` is False.
        Interrupted: Ctrl-C; a checkpoint was saved and `resume=True` continues.
    """
    # deferred: torch is heavy
    import torch

    config.check()
    check_adapter_name(name)
    ranks = current_ranks()
    if config.batch_size % ranks.world:
        raise InvalidInput(
            f"batch size {config.batch_size} does not split evenly over {ranks.world} "
            "processes; use a multiple of --nproc"
        )
    final, work = adapters_dir / name, adapters_dir / f".{name}.partial"
    data = fingerprint(training_set, start.replay if start else ())
    record = start.record if start else {}
    run = _open_run(final, work, name, config, data, record, resume) if ranks.main else {}
    ranks.barrier()
    model = prepare_model(
        base_folder,
        method=config.method,
        precision=config.precision,
        rank=config.rank,
        alpha=config.alpha,
        dropout=config.dropout,
        target_modules=config.target_modules,
        seed=config.seed,
    )
    if start is not None:
        start.initialise(model)
    optimizer, optimizer_name, note = make_optimizer(model, config.optimizer, config.learning_rate)
    train = training_set.train_windows() + list(start.replay if start else ())
    held_out = training_set.held_out_windows()
    general = general_windows(tokenizer, config.sequence_length)
    total_steps = config.steps or math.ceil(config.epochs * len(train) / config.batch_size)  # type: ignore[operator]

    checkpoint = latest_checkpoint(work / "checkpoints") if resume else None
    if checkpoint is not None:
        state = load_checkpoint(checkpoint, model, optimizer)
        step, losses, before, elapsed = (
            state["step"],
            state["losses"],
            state["before"],
            state["elapsed_s"],
        )
    else:
        before = perplexities(model, held_out, general, adapter=False) if ranks.main else {}
        if start is not None and ranks.main:
            before.update(_evaluations(model, start, "start"))
        torch.manual_seed(config.seed + 1)
        step, losses, elapsed = 0, [], 0.0

    step, elapsed = _loop(
        model,
        optimizer,
        train,
        config,
        total_steps,
        step,
        losses,
        elapsed,
        before,
        work,
        name,
        show_progress and ranks.main,
        ranks,
        start,
    )
    if not ranks.main:
        ranks.barrier()  # wait for the main process to evaluate and publish
        return TrainingResult(final, {})
    after = perplexities(model, held_out, general)
    metrics = {
        "held_out_perplexity_base": before["held_out"],
        "held_out_perplexity_adapter": after["held_out"],
        "general_perplexity_base": before["general"],
        "general_perplexity_adapter": after["general"],
        "train_loss_first": losses[0],
        "train_loss_last": losses[-1],
        "train_losses": losses,
        "steps": step,
        "train_tokens": step * config.batch_size * config.sequence_length,
    }
    if start is not None:
        metrics["evaluations"] = {
            key: {"start": before[f"{key}@start"], "end": perplexity(model, windows)}
            for key, windows in start.evaluations.items()
        }
    run.update(
        {
            "optimizer": optimizer_name,
            "optimizer_note": note,
            "duration_s": elapsed,
            "device": training_device(),
            "resumed": checkpoint is not None,
            "processes": ranks.world,
        }
    )
    lora = model.peft_config["default"].to_dict()
    lora["target_modules"] = sorted(lora["target_modules"] or [])
    manifest = build_manifest(
        name=name,
        account=account,
        base=base,
        config=config,
        training_set=training_set,
        lora_config=_jsonable(lora),
        metrics=metrics,
        run=run,
        start=record,
    )
    with writing(work, "run the same command with --resume (the last checkpoint is kept)"):
        published = _publish(model, manifest, work, final)
    ranks.barrier()
    return TrainingResult(published, manifest)


def make_optimizer(model: Any, wanted: str, learning_rate: float) -> tuple[Any, str, str]:
    """(optimizer, its name, a note when the wish could not be met) for the trainable params.

    `auto` is paged AdamW 8-bit on CUDA (QLoRA's choice) and torch AdamW on CPU: paged
    optimisers page their state to CPU memory through CUDA unified memory, which needs a GPU.
    """
    # deferred: torch is heavy
    import torch

    parameters = [p for p in model.parameters() if p.requires_grad]
    on_cuda = torch.cuda.is_available()
    note = ""
    if wanted == "auto":
        wanted = "paged_adamw_8bit" if on_cuda else "adamw"
    if wanted.startswith("paged") and not on_cuda:
        note = f"{wanted} needs a CUDA GPU (bitsandbytes paged memory); using torch AdamW on CPU"
        wanted = "adamw"
    if wanted == "adamw":
        return torch.optim.AdamW(parameters, lr=learning_rate), wanted, note
    # deferred: bitsandbytes is heavy
    import bitsandbytes as bnb

    paged = {
        "paged_adamw_8bit": bnb.optim.PagedAdamW8bit,
        "paged_adamw_32bit": bnb.optim.PagedAdamW32bit,
    }[wanted]
    return paged(parameters, lr=learning_rate), wanted, note


def batch_indexes(windows: int, step: int, batch_size: int, seed: int) -> list[int]:
    """Window indexes of batch `step`: epochs are shuffled by (seed, epoch), so any step's batch
    can be recomputed after a resume."""
    # deferred: torch is heavy
    import torch

    indexes, orders = [], {}
    for position in range(step * batch_size, (step + 1) * batch_size):
        epoch, offset = divmod(position, windows)
        if epoch not in orders:
            generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
            orders[epoch] = torch.randperm(windows, generator=generator).tolist()
        indexes.append(orders[epoch][offset])
    return indexes


def _loop(
    model: Any,
    optimizer: Any,
    train: list[tuple[int, ...]],
    config: TrainingConfig,
    total_steps: int,
    step: int,
    losses: list[float],
    elapsed: float,
    before: dict[str, float],
    work: Path,
    name: str,
    show_progress: bool,
    ranks: Ranks,
    start: Start | None = None,
) -> tuple[int, float]:
    # deferred: torch is heavy
    import torch

    device = next(model.parameters()).device
    forward = ranks.wrap(model)
    bar = tqdm(
        total=total_steps,
        initial=step,
        desc=f"training {name}",
        unit="step",
        disable=not show_progress,
        dynamic_ncols=True,
    )
    model.train()

    def checkpoint() -> None:
        if not ranks.main:
            return
        with writing(work / "checkpoints", "run the same command with --resume"):
            save_checkpoint(
                work / "checkpoints",
                step,
                model,
                optimizer,
                {"losses": losses, "before": before, "elapsed_s": elapsed},
            )

    with _stop_requests() as stop_requested:
        try:
            while step < total_steps:
                if ranks.any(stop_requested()):
                    checkpoint()
                    raise Interrupted(
                        f"training of {name!r} interrupted at step {step}/{total_steps}; a "
                        "checkpoint is saved: continue with the same command plus --resume"
                    )
                started = time.perf_counter()
                indexes = batch_indexes(len(train), step, config.batch_size, config.seed)
                mine = indexes[ranks.rank :: ranks.world]
                batch = torch.tensor([train[i] for i in mine], device=device)
                outputs = forward(input_ids=batch, labels=batch)
                loss = outputs.loss
                if start is not None and start.extra_loss is not None:
                    loss = loss + start.extra_loss(model, batch, outputs.logits)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                if start is not None and start.after_step is not None:
                    start.after_step(model)
                losses.append(ranks.mean(loss.detach()))
                step += 1
                seconds = time.perf_counter() - started
                elapsed += seconds
                bar.update(1)
                tokens_per_second = batch.numel() * ranks.world / seconds
                bar.set_postfix(loss=f"{losses[-1]:.3f}", tok_s=f"{tokens_per_second:.0f}")
                if step % config.checkpoint_every == 0 or step == total_steps:
                    checkpoint()
        finally:
            bar.close()
    return step, elapsed


@dataclass(frozen=True)
class Ranks:
    """This process's place in a torch.distributed group (rank 0 of 1 when not distributed).

    The main process (rank 0) evaluates, checkpoints and publishes; every process trains on its
    slice of each batch, and DistributedDataParallel averages the gradients, so N processes
    with batch B compute the same update as one process with batch B.
    """

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def wrap(self, model: Any) -> Any:
        if self.world == 1:
            return model
        # deferred: torch is heavy
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model)

    def barrier(self) -> None:
        if self.world > 1:
            # deferred: torch is heavy
            import torch.distributed as dist

            dist.barrier()

    def any(self, flag: bool) -> bool:
        """True on every process if `flag` is true on any (so all stop at the same step)."""
        if self.world == 1:
            return flag
        # deferred: torch is heavy
        import torch
        import torch.distributed as dist

        value = torch.tensor([1 if flag else 0])
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def mean(self, value: Any) -> float:
        if self.world == 1:
            return float(value.item())
        # deferred: torch is heavy
        import torch.distributed as dist

        total = value.clone().float()
        dist.all_reduce(total)
        return float(total.item()) / self.world


def current_ranks() -> Ranks:
    # deferred: torch is heavy
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size())
    return Ranks()


@contextmanager
def _stop_requests() -> Iterator[Callable[[], bool]]:
    """Turn Ctrl-C (SIGINT) into a request the loop honours between steps, so a checkpoint
    never holds half an optimizer step. A second Ctrl-C stops at once."""
    requested = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield requested.is_set
        return

    def handler(signum: int, frame: Any) -> None:
        if requested.is_set():
            raise KeyboardInterrupt
        requested.set()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield requested.is_set
    finally:
        signal.signal(signal.SIGINT, previous)


def _evaluations(model: Any, start: Start, when: str) -> dict[str, float]:
    return {f"{key}@{when}": perplexity(model, w) for key, w in start.evaluations.items()}


def _open_run(
    final: Path,
    work: Path,
    name: str,
    config: TrainingConfig,
    data: str,
    start: dict[str, Any],
    resume: bool,
) -> dict[str, Any]:
    if final.exists():
        raise Conflict(f"adapter {name!r} already exists at {final}; choose another --name")
    run_file = work / "run.json"
    wanted = {"config": config.as_dict(), "data_fingerprint": data, "start": _jsonable(start)}
    if work.exists() and not resume:
        raise Conflict(
            f"an interrupted run of {name!r} is in {work}; continue it with --resume "
            f"or delete that folder to start again"
        )
    if resume:
        if not run_file.is_file():
            raise InvalidInput(f"nothing to resume for {name!r}: no interrupted run in {work}")
        recorded = json.loads(run_file.read_text())
        if recorded != wanted:
            raise InvalidInput(
                f"--resume needs the same documents and settings as the "
                f"interrupted run of {name!r} (recorded in {run_file})"
            )
    work.mkdir(parents=True, exist_ok=True)
    run_file.write_text(json.dumps(wanted, indent=2))
    return {"data_fingerprint": data}


def _publish(model: Any, manifest: dict[str, Any], work: Path, final: Path) -> Path:
    staging = work / "adapter"
    shutil.rmtree(staging, ignore_errors=True)
    # Name the base by its registry id, not the local cache path it was loaded from.
    model.peft_config["default"].base_model_name_or_path = manifest["base"]["id"]
    model.save_pretrained(staging, safe_serialization=True)
    (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
    (staging / "README.md").write_text(model_card(manifest))
    staging.rename(final)
    shutil.rmtree(work, ignore_errors=True)
    return final


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
