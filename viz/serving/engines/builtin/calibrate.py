"""Speed calibration of the builtin engine, for the recommender's speed model.

Times, on this machine, the default base in each precision (batch 1, greedy, KV cache,
CALIBRATION_TOKENS tokens after a short prompt) and the overhead of one rank-8 LoRA on every
linear layer applied through this engine's forward hooks (`multi_lora`), plus the copy
bandwidth; saves the `viz.routing.speed.Calibration` where `load_calibration` finds it.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from viz.models.loading import load_model
from viz.models.memory import measured_bytes
from viz.routing.hardware import detect_hardware
from viz.routing.speed import PRECISIONS, Calibration, calibration_path, machine_id
from viz.serving.engines.builtin.multi_lora import LoraBatch, install_hooks
from viz.serving.engines.lora import LoadedAdapter

__all__ = ["CALIBRATION_TOKENS", "calibrate", "random_adapter", "seconds_per_token"]

CALIBRATION_TOKENS = 32
# A pass stops early past this many seconds (after 4 tokens at least): a precision the CPU only
# emulates (bf16 without AVX512-BF16) decodes ~20x slower, and 4-8 tokens time it well enough.
CALIBRATION_PASS_S_MAX = 3.0


def calibrate(
    record: Any,
    models_dir: Path,
    home: Path,
    *,
    precisions: tuple[str, ...] = PRECISIONS,
    progress: Any = None,
) -> Calibration:
    """Measure this machine (see the module docstring), save and return the calibration."""
    say = progress or (lambda _text: None)
    hardware = detect_hardware()
    say("memory bandwidth (256 MB copy, best of 5)")
    bandwidth = _copy_bandwidth_gbs()
    seconds: dict[str, float] = {}
    weights: dict[str, int] = {}
    overhead: dict[str, float] = {}
    for precision in precisions:
        say(f"{record.id} {precision}: {CALIBRATION_TOKENS} tokens")
        loaded = load_model(record, models_dir, precision=precision)
        weights[precision] = measured_bytes(loaded.model)
        seconds[precision] = seconds_per_token(loaded.model)
        say(f"{record.id} {precision} with one rank-8 LoRA on every linear layer")
        overhead[precision] = round(_adapter_overhead(loaded.model, seconds[precision]), 4)
        del loaded
    calibration = Calibration(
        machine=machine_id(hardware),
        described=hardware.describe(),
        bandwidth_gbs=round(bandwidth, 2),
        weight_bytes=weights,
        seconds_per_token={p: round(s, 5) for p, s in seconds.items()},
        adapter_overhead=overhead,
        measured_at=datetime.now(UTC).isoformat(timespec="seconds"),
        library_versions={m: metadata.version(m) for m in ("torch", "transformers", "peft")},
    )
    path = calibration_path(home, calibration.machine)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(calibration), indent=2) + "\n")
    return calibration


def _copy_bandwidth_gbs() -> float:
    import torch  # deferred: torch is heavy

    source = torch.ones(64 * 2**20)  # 256 MB of fp32
    target = torch.empty_like(source)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        target.copy_(source)
        best = min(best, time.perf_counter() - start)
    return 2 * source.numel() * 4 / best / 1e9  # read + write


def seconds_per_token(model: Any) -> float:
    """Decode time per token at batch 1 (greedy, KV cache), after a warm-up, best of 2 passes
    of `CALIBRATION_TOKENS` tokens (fewer, at least 4, once a pass takes
    `CALIBRATION_PASS_S_MAX`)."""
    import torch  # deferred: torch is heavy

    ids = torch.tensor([[1, 504, 3458, 282, 4649, 314]])
    best = float("inf")
    with torch.inference_mode():
        for _ in range(2):
            output = model(ids, use_cache=True)
            cache, token = output.cache, output.logits[:, -1:].argmax(-1)
            start, done = time.perf_counter(), 0
            while done < CALIBRATION_TOKENS:
                output = model(token, cache=cache, use_cache=True)
                cache, token = output.cache, output.logits[:, -1:].argmax(-1)
                done += 1
                if done >= 4 and time.perf_counter() - start > CALIBRATION_PASS_S_MAX:
                    break
            best = min(best, (time.perf_counter() - start) / done)
    return best


def _adapter_overhead(model: Any, base_seconds: float) -> float:
    """Extra time per token of one rank-8 LoRA on every linear layer, applied the way `viz
    serve` applies adapters (the multi-LoRA forward hooks)."""
    current: list[LoraBatch | None] = [LoraBatch.for_rows([[(random_adapter(model, 0), 1.0)]])]
    handles = install_hooks(model, current)
    try:
        seconds = seconds_per_token(model)
    finally:
        for handle in handles:
            handle.remove()
    return max(0.0, seconds / base_seconds - 1)


def random_adapter(model: Any, seed: int, rank: int = 8) -> Any:
    """A random rank-`rank` LoRA on every linear layer of `model` (but the head), for timing."""
    import torch  # deferred: torch is heavy

    generator = torch.Generator().manual_seed(seed)
    modules = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and not name.endswith("lm_head"):
            a = torch.randn(rank, module.in_features, generator=generator) * 0.01
            b = torch.randn(module.out_features, rank, generator=generator) * 0.01
            modules[name] = (a, b)
    return LoadedAdapter(-1 - seed, f"random-{seed}", rank, 2.0, modules, 0)
