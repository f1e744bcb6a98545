"""Multi-process training on an existing engine: torchrun + DistributedDataParallel.

`viz adapters train --nproc N` selects and tokenises the documents once, writes the job to
`<adapters_dir>/.<name>.job.json`, and starts N workers with torchrun (`--standalone`, so the
rendezvous stays on this machine). Each worker joins a process group (gloo on CPU, nccl on CUDA)
and runs the same `train_adapter` as a single process; rank 0 evaluates and publishes.

    python -m torch.distributed.run --standalone --nproc_per_node 2 \\
        -m viz.training.distributed .viz/adapters/.qasper-nlp.job.json

`viz models pretrain --nproc N` does the same for pretraining a base from scratch
(`pretrain_in_processes`): the job holds the texts and the config, the workers read the
tokenizer the parent trained, and the main worker writes the model and its figures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from viz.errors import InvalidInput, LimitExceeded, VizError
from viz.store.schema import BaseModel
from viz.training.config import TrainingConfig
from viz.training.dataset import DocumentTokens, TrainingSet
from viz.training.pretrain import PretrainConfig, PretrainResult, pretrain
from viz.training.ranks import current_ranks
from viz.training.trainer import train_adapter

__all__ = ["NPROC_MAX", "launch", "main", "pretrain_in_processes", "run_workers"]

NPROC_MAX = 64
RESULT_FILE = "result.json"
# Every registry column but the timestamp travels to the workers.
BASE_FIELDS = tuple(c.name for c in BaseModel.__table__.columns if c.name != "created_at")


def launch(
    *,
    nproc: int,
    name: str,
    account: str,
    base: BaseModel,
    base_folder: Path,
    training_set: TrainingSet,
    config: TrainingConfig,
    adapters_dir: Path,
    resume: bool,
) -> None:
    """Run `train_adapter` in `nproc` processes under torchrun; raise if it fails.

    Raises:
        LimitExceeded: more processes than NPROC_MAX.
        VizError: a worker failed (its own message is on stderr above).
    """
    if not 2 <= nproc <= NPROC_MAX:
        raise LimitExceeded(f"--nproc {nproc} must be between 2 and {NPROC_MAX}")
    if config.batch_size % nproc:
        raise InvalidInput(
            f"batch size {config.batch_size} does not split evenly over "
            f"{nproc} processes; use a multiple of --nproc"
        )
    adapters_dir.mkdir(parents=True, exist_ok=True)
    job_file = adapters_dir / f".{name}.job.json"
    job = {
        "name": name,
        "account": account,
        "resume": resume,
        "base": {field: getattr(base, field) for field in BASE_FIELDS},
        "base_folder": str(base_folder),
        "adapters_dir": str(adapters_dir),
        "config": config.as_dict(),
        "training_set": {
            "sequence_length": training_set.sequence_length,
            "overlap": training_set.overlap,
            "train": [asdict(d) for d in training_set.train],
            "held_out": [asdict(d) for d in training_set.held_out],
        },
    }
    job_file.write_text(json.dumps(job))
    try:
        run_workers(nproc, job_file, f"distributed training of {name!r}")
    finally:
        job_file.unlink(missing_ok=True)


def pretrain_in_processes(
    nproc: int,
    *,
    train_texts: Sequence[str],
    held_out_texts: Sequence[str],
    config: PretrainConfig,
    work: Path,
    resume: bool,
) -> PretrainResult:
    """`viz.training.pretrain.pretrain` in `nproc` processes under torchrun (the tokenizer is
    already in `work/tokenizer`); the main worker's result.

    Raises:
        LimitExceeded, InvalidInput, VizError: as `launch`.
    """
    if not 2 <= nproc <= NPROC_MAX:
        raise LimitExceeded(f"--nproc {nproc} must be between 2 and {NPROC_MAX}")
    if config.batch_size % nproc:
        raise InvalidInput(
            f"batch size {config.batch_size} does not split evenly over {nproc} processes; "
            "use a multiple of --nproc"
        )
    job_file = work / "job.json"
    job = {
        "kind": "pretrain",
        "train": list(train_texts),
        "held_out": list(held_out_texts),
        "config": asdict(config),
        "work": str(work),
        "resume": resume,
    }
    job_file.write_text(json.dumps(job))
    try:
        run_workers(nproc, job_file, "distributed pretraining")
    finally:
        job_file.unlink(missing_ok=True)
    saved = json.loads((work / RESULT_FILE).read_text())
    return PretrainResult(**{**saved, "model_folder": Path(saved["model_folder"])})


def run_workers(nproc: int, job_file: Path, what: str) -> None:
    """torchrun `--standalone` with `nproc` workers of this module on `job_file`; the cores
    shared between them.

    Raises:
        VizError: a worker failed (its own message is on stderr above).
    """
    threads = max(1, (os.cpu_count() or 1) // nproc)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "viz.training.distributed",
        str(job_file),
    ]
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    result = subprocess.run(command, env=environment)
    if result.returncode != 0:
        error = VizError(
            f"{what} failed in a worker (exit code {result.returncode}); see the worker's "
            "message above"
        )
        error.exit_code = result.returncode if result.returncode < 128 else 1
        raise error


def main(job_file: str) -> int:
    """A torchrun worker: join the group, train, leave. Returns the process exit code."""
    # deferred: torch, transformers are heavy
    import torch
    import torch.distributed as dist
    from transformers import AutoTokenizer

    job = json.loads(Path(job_file).read_text())
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    try:
        if job.get("kind") == "pretrain":
            _pretrain(job)
            return 0
        train_adapter(
            name=job["name"],
            account=job["account"],
            base=BaseModel(**job["base"]),
            base_folder=Path(job["base_folder"]),
            training_set=_training_set(job),
            config=_config(job["config"]),
            adapters_dir=Path(job["adapters_dir"]),
            tokenizer=AutoTokenizer.from_pretrained(job["base_folder"]),
            resume=job["resume"],
        )
    except VizError as error:
        if dist.get_rank() == 0:
            print(f"error: {error.message}", file=sys.stderr)
        return error.exit_code
    finally:
        dist.destroy_process_group()
    return 0


def _pretrain(job: dict[str, Any]) -> None:
    """One pretraining worker; the main one writes the result for the parent to read."""
    # deferred: transformers is heavy; tqdm.auto probes for notebooks on import
    from tqdm.auto import tqdm
    from transformers import PreTrainedTokenizerFast

    work = Path(job["work"])
    config = PretrainConfig(**job["config"])
    main = current_ranks().main
    bar = tqdm(total=config.steps(), desc="pretraining", unit="step", disable=not main)

    def progress(step: int, steps: int, loss: float, tokens_per_second: float) -> None:
        bar.n = step
        bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{tokens_per_second:.0f}")

    try:
        result = pretrain(
            job["train"],
            job["held_out"],
            PreTrainedTokenizerFast.from_pretrained(work / "tokenizer"),
            config,
            work,
            resume=job["resume"],
            progress=progress,
        )
    finally:
        bar.close()
    if main:
        saved = {**asdict(result), "model_folder": str(result.model_folder)}
        (work / RESULT_FILE).write_text(json.dumps(saved))


def _config(values: dict[str, Any]) -> TrainingConfig:
    return TrainingConfig(**{**values, "target_modules": tuple(values["target_modules"])})


def _training_set(job: dict[str, Any]) -> TrainingSet:
    data = job["training_set"]

    def documents(items: list[dict[str, Any]]) -> tuple[DocumentTokens, ...]:
        return tuple(
            DocumentTokens(**{**d, "windows": tuple(tuple(w) for w in d["windows"])}) for d in items
        )

    return TrainingSet(
        documents(data["train"]),
        documents(data["held_out"]),
        data["sequence_length"],
        data["overlap"],
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
