"""Training configuration: one frozen dataclass, checked whole before anything loads."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from viz.errors import InvalidInput, LimitExceeded

__all__ = ["METHODS", "TrainingConfig", "check_adapter_name"]

METHODS = ("qlora", "lora")
BASE_PRECISIONS = {"qlora": ("nf4",), "lora": ("fp32", "bf16")}
OPTIMIZERS = ("auto", "adamw", "paged_adamw_8bit", "paged_adamw_32bit")
RANK_MAX = 256
STEPS_MAX = 100_000
BATCH_MAX = 256
ADAPTER_NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{1,62}[a-z0-9]$")


@dataclass(frozen=True)
class TrainingConfig:
    """How to train one adapter. `steps` wins over `epochs` when both are set."""

    method: str = "qlora"
    base_precision: str | None = None  # None: nf4 for qlora, fp32 for lora
    rank: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ("all-linear",)
    learning_rate: float = 2e-4
    steps: int | None = 30
    epochs: float | None = None
    batch_size: int = 2
    sequence_length: int = 256
    overlap: int = 32
    held_out_fraction: float = 0.25
    seed: int = 0
    checkpoint_every: int = 10
    optimizer: str = "auto"
    # recompute activations in the backward pass: less memory for about a third more compute;
    # None: on for CUDA (memory is what limits there, as in QLoRA), off on the CPU
    gradient_checkpointing: bool | None = None
    # windows per perplexity measured before and after (evenly spread over the held-out ones)
    evaluation_windows: int = 32

    def check(self) -> None:
        """Raise InvalidInput (or LimitExceeded) naming every bad field at once."""
        problems = []
        if self.method not in METHODS:
            problems.append(f"method {self.method!r} is not one of {', '.join(METHODS)}")
        if self.base_precision not in (None, *BASE_PRECISIONS.get(self.method, ())):
            allowed = " or ".join(BASE_PRECISIONS.get(self.method, ()))
            problems.append(
                f"base precision {self.base_precision!r} does not go with method {self.method!r}"
                f" (use {allowed})"
            )
        if not 1 <= self.evaluation_windows <= 4096:
            raise InvalidInput(
                f"evaluation windows {self.evaluation_windows} must be 1..4096 (more measure "
                "perplexity more precisely, fewer faster)"
            )
        if self.rank <= 0:
            problems.append(f"rank is {self.rank}; it must be a positive integer (e.g. 8)")
        if self.alpha <= 0:
            problems.append(f"alpha is {self.alpha}; it must be positive (e.g. 2 x rank)")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout is {self.dropout}; use a value in [0, 1)")
        if not self.target_modules:
            problems.append("no target modules; use all-linear or names such as q_proj")
        if not 0.0 < self.learning_rate < 1.0:
            problems.append(f"learning rate is {self.learning_rate}; use e.g. 2e-4")
        if self.steps is None and self.epochs is None:
            problems.append("give --steps or --epochs")
        if self.steps is not None and self.steps <= 0:
            problems.append(f"steps is {self.steps}; it must be positive")
        if self.epochs is not None and self.epochs <= 0:
            problems.append(f"epochs is {self.epochs}; it must be positive")
        if self.batch_size <= 0:
            problems.append(f"batch size is {self.batch_size}; it must be positive")
        if self.checkpoint_every <= 0:
            problems.append(f"checkpoint interval is {self.checkpoint_every}; it must be positive")
        if self.optimizer not in OPTIMIZERS:
            problems.append(f"optimizer {self.optimizer!r} is not one of {', '.join(OPTIMIZERS)}")
        if problems:
            raise InvalidInput("; ".join(problems))
        limits = [
            (self.rank, RANK_MAX, "rank"),
            (self.batch_size, BATCH_MAX, "batch size"),
            (self.steps or 0, STEPS_MAX, "steps"),
        ]
        for value, maximum, name in limits:
            if value > maximum:
                raise LimitExceeded(f"{name} {value} is over the maximum of {maximum}")

    @property
    def precision(self) -> str:
        """The precision the base is loaded in for training."""
        if self.base_precision is not None:
            return self.base_precision
        return "nf4" if self.method == "qlora" else "fp32"

    def as_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["target_modules"] = list(self.target_modules)
        return values


def check_adapter_name(name: str) -> None:
    if not ADAPTER_NAME_PATTERN.match(name):
        raise InvalidInput(
            f"adapter name {name!r} is not valid: use 3-64 lowercase letters, digits, '.', '_' "
            "or '-' (e.g. 'qasper-nlp')"
        )
