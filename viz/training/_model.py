"""Preparing a base for LoRA / QLoRA training (the QLoRA paper's recipe, section 3)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from viz.models.loading import load_folder

__all__ = ["disable_cpu_repacking", "prepare_model", "training_device"]

# Non-reentrant activation checkpointing: the form PyTorch recommends, and it works with inputs
# that do not require gradients.
CHECKPOINTING = {"use_reentrant": False}


def training_device() -> str:
    # deferred: torch is heavy
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def prepare_model(
    base_folder: Path,
    *,
    method: str,
    precision: str,
    rank: int,
    alpha: int,
    dropout: float,
    target_modules: tuple[str, ...],
    seed: int,
    checkpointing: bool | None = None,
) -> Any:
    """Load the base in `precision` (nf4 with double quantisation for qlora, fp32 or bf16 for
    lora) on the training device and wrap it in LoRA.

    Gradient checkpointing (`checkpointing`; None: on CUDA, as in QLoRA, where memory is the
    limit; off on the CPU, where it costs a third more time: 4.0 s vs 2.6 s a step of 2 x 64
    tokens on SmolLM2-135M, 2 AVX2 cores). The LoRA weights are initialised from `seed`, so two
    runs with the same seed start from the same adapter.
    """
    # deferred: peft, torch are heavy
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    device = training_device()
    model = load_folder(base_folder, precision, device=device)
    if checkpointing is None:
        checkpointing = device == "cuda"
    if method == "qlora":
        disable_cpu_repacking(model)
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=checkpointing,
            gradient_checkpointing_kwargs=CHECKPOINTING,
        )
    elif checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=CHECKPOINTING)
        model.enable_input_require_grads()
    model.config.use_cache = False
    targets: str | list[str] = (
        "all-linear" if target_modules == ("all-linear",) else list(target_modules)
    )
    torch.manual_seed(seed)
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=targets,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def disable_cpu_repacking(model: Any) -> None:
    """Keep bitsandbytes from repacking 4-bit weights for its CPU inference kernel.

    On AVX512-BF16 CPUs, bitsandbytes 0.50 repacks a `Linear4bit`'s weights during the first
    forward pass without gradients (an evaluation, say); training afterwards silently gets no
    gradient through the repacked layers. Turning the fast path off keeps training correct.
    """
    try:
        # deferred: bitsandbytes is heavy
        from bitsandbytes.nn import Linear4bit
    except ImportError:
        return
    for module in model.modules():
        if isinstance(module, Linear4bit):
            module.support_avx512bf16_for_cpu = False
