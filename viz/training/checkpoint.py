"""Checkpoints of a training run: adapter weights, optimizer state, random state and step.

Everything tensor-shaped is stored as safetensors and the rest as JSON, so resuming never
unpickles anything. A checkpoint is written to a temporary folder and renamed into place, so an
interrupted write never leaves a checkpoint that looks complete.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from viz.errors import InvalidInput, LimitExceeded, VizError

__all__ = [
    "flatten_optimizer",
    "latest_checkpoint",
    "load_checkpoint",
    "save_checkpoint",
    "unflatten_optimizer",
    "writing",
]

CHECKPOINT_PREFIX = "step-"
CHECKPOINTS_KEPT = 2


@contextmanager
def writing(path: Path, then: str) -> Iterator[None]:
    """Turn a failed write under `path` (disk full, permissions) into a message with a next step.

    Raises:
        LimitExceeded: no space left (or quota exceeded).
        VizError: any other OS error while writing.
    """
    try:
        yield
    except OSError as error:
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise LimitExceeded(
                f"no space left on the device while writing {path}; free some space, then {then}"
            ) from error
        raise VizError(f"cannot write {path}: {error.strerror or error}; {then}") from error


def save_checkpoint(
    folder: Path, step: int, model: Any, optimizer: Any, extra: dict[str, Any]
) -> Path:
    """Write checkpoint `step` under `folder` and drop all but the newest few."""
    # deferred: peft, safetensors, torch are heavy
    import torch
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    target = folder / f"{CHECKPOINT_PREFIX}{step:07d}"
    staging = folder / f".{target.name}.writing"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    adapter = {k: v.detach().contiguous() for k, v in get_peft_model_state_dict(model).items()}
    save_file(adapter, staging / "adapter.safetensors")
    tensors, state = flatten_optimizer(optimizer.state_dict())
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    save_file(tensors, staging / "optimizer.safetensors")
    (staging / "state.json").write_text(json.dumps({"step": step, "optimizer": state, **extra}))
    shutil.rmtree(target, ignore_errors=True)
    os.replace(staging, target)
    for old in sorted(folder.glob(f"{CHECKPOINT_PREFIX}*"))[:-CHECKPOINTS_KEPT]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def latest_checkpoint(folder: Path) -> Path | None:
    found = sorted(folder.glob(f"{CHECKPOINT_PREFIX}*")) if folder.is_dir() else []
    return found[-1] if found else None


def load_checkpoint(checkpoint: Path, model: Any, optimizer: Any) -> dict[str, Any]:
    """Restore adapter, optimizer and random state from `checkpoint`; return its state.json."""
    # deferred: peft, safetensors, torch are heavy
    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    try:
        state = json.loads((checkpoint / "state.json").read_text())
        adapter = load_file(checkpoint / "adapter.safetensors")
        tensors = load_file(checkpoint / "optimizer.safetensors")
    except (OSError, ValueError) as error:
        raise InvalidInput(
            f"checkpoint {checkpoint} cannot be read ({error}); delete it to resume from the "
            "one before, or start again without --resume"
        ) from error
    set_peft_model_state_dict(model, adapter)
    torch.set_rng_state(tensors.pop("rng.torch"))
    cuda_state = tensors.pop("rng.cuda", None)
    if cuda_state is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(cuda_state)
    optimizer.load_state_dict(unflatten_optimizer(tensors, state["optimizer"]))
    return state


def flatten_optimizer(state_dict: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """An optimizer's state as safetensors tensors (`state.<param>.<key>`) and JSON for the rest.

    bitsandbytes' 8-bit optimizers nest their quantisation tensors one level down (a dict under
    one key, hidden from FSDP); those become `state.<param>.<key>/<inner key>`.
    """
    # deferred: torch is heavy
    import torch

    tensors: dict[str, Any] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, values in state_dict["state"].items():
        for key, value in values.items():
            inner = value if isinstance(value, dict) else {None: value}
            for sub, item in inner.items():
                name = key if sub is None else f"{key}/{sub}"
                if isinstance(item, torch.Tensor):
                    tensors[f"state.{index}.{name}"] = item.detach().contiguous().cpu()
                else:
                    scalars.setdefault(str(index), {})[name] = item
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def unflatten_optimizer(tensors: dict[str, Any], saved: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}

    def put(index: int, name: str, value: Any) -> None:
        key, _, sub = name.partition("/")
        if sub:
            state.setdefault(index, {}).setdefault(key, {})[sub] = value
        else:
            state.setdefault(index, {})[key] = value

    for name, value in tensors.items():
        _, index, key = name.split(".", 2)
        put(int(index), key, value)
    for index, values in saved["scalars"].items():
        for key, value in values.items():
            put(int(index), key, value)
    return {"state": state, "param_groups": saved["param_groups"]}
