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
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
from viz.training.evaluate import general_windows, perplexities, perplexity, spread
from viz.training.manifest import MANIFEST_FILE, build_manifest, model_card
from viz.training.ranks import Ranks, current_ranks, stop_requests

__all__ = [
    "Start",
    "TrainingResult",
    "batch_indexes",
    "make_optimizer",
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
    ranks = _check(config, name)
    final, work = adapters_dir / name, adapters_dir / f".{name}.partial"
    replay, record = (start.replay, start.record) if start else ((), {})
    data = fingerprint(training_set, replay)
    run = _open_run(final, work, name, config, data, record, resume) if ranks.main else {}
    ranks.barrier()
    model = _model(base_folder, config, start)
    optimizer, optimizer_name, note = make_optimizer(model, config.optimizer, config.learning_rate)
    train = training_set.train_windows() + list(replay)
    held_out = spread(training_set.held_out_windows(), config.evaluation_windows)
    general = general_windows(tokenizer, config.sequence_length)
    checkpoint = latest_checkpoint(work / "checkpoints") if resume else None
    progress = _begin(model, optimizer, checkpoint, held_out, general, ranks, start, config.seed)
    _loop(model, optimizer, train, config, progress, work, name, show_progress, ranks, start)
    if not ranks.main:
        ranks.barrier()  # wait for the main process to evaluate and publish
        return TrainingResult(final, {})
    run.update(optimizer=optimizer_name, optimizer_note=note, duration_s=progress.elapsed)
    run.update(device=training_device(), resumed=checkpoint is not None, processes=ranks.world)
    manifest = build_manifest(
        name=name,
        account=account,
        base=base,
        config=config,
        training_set=training_set,
        lora_config=_lora_config(model),
        metrics=_metrics(model, progress, held_out, general, config, start),
        run=run,
        start=record,
    )
    with writing(work, "run the same command with --resume (the last checkpoint is kept)"):
        published = _publish(model, manifest, work, final)
    ranks.barrier()
    return TrainingResult(published, manifest)


@dataclass
class _Progress:
    """Where a run stands: saved in each checkpoint, so a resumed run continues the same."""

    step: int
    losses: list[float]
    before: dict[str, float]
    elapsed: float


def _check(config: TrainingConfig, name: str) -> Ranks:
    """This process's ranks, once the config, the name and the batch split are checked."""
    config.check()
    check_adapter_name(name)
    ranks = current_ranks()
    if config.batch_size % ranks.world:
        raise InvalidInput(
            f"batch size {config.batch_size} does not split evenly over {ranks.world} "
            "processes; use a multiple of --nproc"
        )
    return ranks


def _model(base_folder: Path, config: TrainingConfig, start: Start | None) -> Any:
    """The base wrapped with a fresh LoRA, then set up by `start` if any."""
    model = prepare_model(
        base_folder,
        method=config.method,
        precision=config.precision,
        rank=config.rank,
        alpha=config.alpha,
        dropout=config.dropout,
        target_modules=config.target_modules,
        seed=config.seed,
        checkpointing=config.gradient_checkpointing,
    )
    if start is not None:
        start.initialise(model)
    return model


def _begin(
    model: Any,
    optimizer: Any,
    checkpoint: Path | None,
    held_out: Windows,
    general: Windows,
    ranks: Ranks,
    start: Start | None,
    seed: int,
) -> _Progress:
    """The progress saved in `checkpoint`, or step 0 with the perplexities before training."""
    import torch  # deferred: torch is heavy

    if checkpoint is not None:
        state = load_checkpoint(checkpoint, model, optimizer)
        return _Progress(state["step"], state["losses"], state["before"], state["elapsed_s"])
    before = perplexities(model, held_out, general, adapter=False) if ranks.main else {}
    if start is not None and ranks.main:
        before.update(_evaluations(model, start, "start"))
    torch.manual_seed(seed + 1)
    return _Progress(0, [], before, 0.0)


def _metrics(
    model: Any,
    progress: _Progress,
    held_out: Windows,
    general: Windows,
    config: TrainingConfig,
    start: Start | None,
) -> dict[str, Any]:
    """The manifest's metrics: perplexities before and after, losses, steps and tokens."""
    after = perplexities(model, held_out, general)
    before, losses = progress.before, progress.losses
    metrics: dict[str, Any] = {
        "held_out_perplexity_base": before["held_out"],
        "held_out_perplexity_adapter": after["held_out"],
        "general_perplexity_base": before["general"],
        "general_perplexity_adapter": after["general"],
        "held_out_windows": len(held_out),
        "train_loss_first": losses[0],
        "train_loss_last": losses[-1],
        "train_losses": losses,
        "steps": progress.step,
        "train_tokens": progress.step * config.batch_size * config.sequence_length,
    }
    if start is not None:  # a set that is the held-out one was just measured: not twice
        metrics["evaluations"] = {
            key: {
                "start": before[f"{key}@start"],
                "end": after["held_out"] if windows == held_out else perplexity(model, windows),
            }
            for key, windows in start.evaluations.items()
        }
    return metrics


def _lora_config(model: Any) -> dict[str, Any]:
    lora = model.peft_config["default"].to_dict()
    lora["target_modules"] = sorted(lora["target_modules"] or [])
    return _jsonable(lora)  # type: ignore[no-any-return]


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
    progress: _Progress,
    work: Path,
    name: str,
    show_progress: bool,
    ranks: Ranks,
    start: Start | None = None,
) -> None:
    """Train from `progress.step` to the last step, checkpointing; `progress` follows along."""
    from tqdm.auto import tqdm  # deferred: tqdm.auto probes for notebooks on import

    total_steps = config.steps or math.ceil(config.epochs * len(train) / config.batch_size)  # type: ignore[operator]

    forward = ranks.wrap(model)
    bar = tqdm(
        total=total_steps,
        initial=progress.step,
        desc=f"training {name}",
        unit="step",
        disable=not show_progress,
        dynamic_ncols=True,
    )
    model.train()
    with stop_requests() as stop_requested:
        try:
            while progress.step < total_steps:
                if ranks.any(stop_requested()):
                    _checkpoint(model, optimizer, progress, work, ranks)
                    raise Interrupted(
                        f"training of {name!r} interrupted at step {progress.step}/{total_steps}; "
                        "a checkpoint is saved: continue with the same command plus --resume"
                    )
                started = time.perf_counter()
                tokens = _step(model, forward, optimizer, train, config, progress, ranks, start)
                seconds = time.perf_counter() - started
                progress.elapsed += seconds
                bar.update(1)
                tokens_per_second = tokens * ranks.world / seconds
                bar.set_postfix(loss=f"{progress.losses[-1]:.3f}", tok_s=f"{tokens_per_second:.0f}")
                if progress.step % config.checkpoint_every == 0 or progress.step == total_steps:
                    _checkpoint(model, optimizer, progress, work, ranks)
        finally:
            bar.close()


def _step(
    model: Any,
    forward: Any,
    optimizer: Any,
    train: list[tuple[int, ...]],
    config: TrainingConfig,
    progress: _Progress,
    ranks: Ranks,
    start: Start | None,
) -> int:
    """One optimizer step on this process's slice of batch `progress.step`; its token count."""
    import torch  # deferred: torch is heavy

    device = next(model.parameters()).device
    indexes = batch_indexes(len(train), progress.step, config.batch_size, config.seed)
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
    progress.losses.append(ranks.mean(loss.detach()))
    progress.step += 1
    return int(batch.numel())


def _checkpoint(model: Any, optimizer: Any, progress: _Progress, work: Path, ranks: Ranks) -> None:
    if not ranks.main:
        return
    with writing(work / "checkpoints", "run the same command with --resume"):
        save_checkpoint(
            work / "checkpoints",
            progress.step,
            model,
            optimizer,
            {"losses": progress.losses, "before": progress.before, "elapsed_s": progress.elapsed},
        )


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
    # Embeddings are never targeted; "auto" would look the base id up on the Hub and warn.
    model.save_pretrained(staging, safe_serialization=True, save_embedding_layers=False)
    (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
    (staging / "README.md").write_text(model_card(manifest))
    staging.rename(final)
    shutil.rmtree(work, ignore_errors=True)
    return final


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
