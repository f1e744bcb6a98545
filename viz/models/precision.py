"""Which precisions this machine runs fast, and the training method that follows from it.

Measured on 2-core CPUs, one LoRA step of 4 x 128 tokens on SmolLM2-135M
(`bench/results/train-cpu.txt` and issue 19):

    CPU class                          fp32 base   bf16 base   NF4 base (QLoRA)
    AVX512-BF16 / AMX (native bf16)       6.5 s       4.3 s        6.1 s
    AVX2 only (no native bf16)            ~7 s       ~122 s       ~74 s

Without native bf16, PyTorch emulates bf16 matmuls and bitsandbytes' 4-bit CPU path has no fast
kernel, so an fp32 base is 10-17x faster there. `--method auto` (the CLI's default) picks QLoRA on
CUDA and on CPUs with native bf16, LoRA on an fp32 base elsewhere; `--base-precision auto` picks
bf16 where it is native and fp32 elsewhere.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from viz.errors import InvalidInput

__all__ = ["TrainingChoice", "choose_training", "cuda_available", "native_bf16"]

CPUINFO = Path("/proc/cpuinfo")
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
FORCE_ENV = "VIZ_CPU_NATIVE_BF16"  # "0" or "1": override the detection (benchmarks, tests)


@dataclass(frozen=True)
class TrainingChoice:
    """A concrete training method and base precision, and why they were chosen."""

    method: str
    base_precision: str | None
    reason: str


def native_bf16(cpuinfo: Path = CPUINFO) -> bool:
    """True when the CPU computes bf16 natively (AVX512-BF16 or AMX), read from /proc/cpuinfo.

    `VIZ_CPU_NATIVE_BF16=0|1` overrides the reading; `ATEN_CPU_CAPABILITY=avx2` (or lower)
    counts as not native, since PyTorch then emulates bf16. Other systems (no /proc/cpuinfo)
    count as not native: fp32 is the safe, fast-enough default there.
    """
    forced = os.environ.get(FORCE_ENV)
    if forced in ("0", "1"):
        return forced == "1"
    # PyTorch told to use AVX2 kernels (or less) emulates bf16, whatever the CPU has.
    capability = os.environ.get("ATEN_CPU_CAPABILITY", "").lower()
    if capability and not capability.startswith("avx512"):
        return False
    return any(flag in _cpu_flags(cpuinfo) for flag in BF16_FLAGS)


@cache
def _cpu_flags(cpuinfo: Path) -> frozenset[str]:
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    flags = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return frozenset(flags.split())


def cuda_available() -> bool:
    """Whether PyTorch sees a CUDA device."""
    import torch  # deferred: torch is heavy and most callers only read /proc/cpuinfo

    return bool(torch.cuda.is_available())


def choose_training(method: str, base_precision: str | None, *, cuda: bool) -> TrainingChoice:
    """Resolve `auto` in `--method` and `--base-precision` for this machine.

    Args:
        method: "auto", "qlora" or "lora".
        base_precision: "auto", None (the method's default), or a precision.
        cuda: whether training runs on a CUDA device.

    Raises:
        InvalidInput: `--base-precision auto` with an explicit QLoRA method makes no sense.
    """
    fast_bf16 = cuda or native_bf16()
    if method == "auto":
        if base_precision not in (None, "auto"):
            method = "qlora" if base_precision == "nf4" else "lora"
            return TrainingChoice(method, base_precision, f"--base-precision {base_precision}")
        if fast_bf16:
            why = "CUDA" if cuda else "this CPU has native bf16 (AVX512-BF16/AMX)"
            return TrainingChoice("qlora", "nf4", f"{why}: 4-bit QLoRA steps are fast here")
        return TrainingChoice(
            "lora",
            "fp32",
            "this CPU has no native bf16 (no AVX512-BF16/AMX): an NF4 or bf16 base trains "
            "10-17x slower than fp32 here, so LoRA on an fp32 base",
        )
    if base_precision != "auto":
        return TrainingChoice(method, base_precision, f"--method {method}")
    if method != "lora":
        raise InvalidInput(
            f"--base-precision auto goes with --method lora or auto, not {method!r}; "
            "drop --base-precision (QLoRA always trains on an nf4 base)"
        )
    if fast_bf16:
        return TrainingChoice("lora", "bf16", "native bf16 here: a bf16 base is fastest")
    return TrainingChoice(
        "lora", "fp32", "no native bf16 on this CPU: a bf16 base trains ~17x slower than fp32"
    )
