"""Speed: seconds per generated token of a base variant with n adapters, on some hardware.

Decoding one token reads every weight once, so it is bound by memory bandwidth:

    seconds per token = weight bytes / (bandwidth x efficiency[precision]) x (1 + n x overhead)

`viz recommend --calibrate` measures, on this machine, and caches per machine in
`$VIZ_HOME/routing/calibration-<machine id>.json`:
- the copy bandwidth (a 256 MB tensor copied, best of 5);
- seconds per token of the default base in each precision (batch 1, greedy, KV cache, 32
  tokens after a short prompt), which gives each precision's efficiency on this CPU;
- the overhead of one adapter in each precision (a rank-8 LoRA on every linear layer, applied
  through the same forward hooks `viz serve` uses).

On the calibrated machine the measured figures are used as they are; another CPU is estimated
from its bandwidth and the efficiencies measured here; a GPU from its bandwidth and
GPU_EFFICIENCY (assumed, not measured: this project's CI has no GPU). Without a calibration
the CPU efficiencies fall back to DEFAULT_CPU_EFFICIENCY, and the estimate says so.
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from viz.models.loading import load_model
from viz.models.memory import measured_bytes
from viz.routing.hardware import Hardware, detect_hardware

__all__ = [
    "Calibration",
    "Speed",
    "calibrate",
    "calibration_path",
    "estimate_speed",
    "load_calibration",
    "machine_id",
]

PRECISIONS = ("fp32", "bf16", "nf4")
# Measured on the 2-core development VM (AVX512-BF16, 32 GB/s) by `viz recommend --calibrate`.
DEFAULT_CPU_EFFICIENCY = {"fp32": 0.31, "bf16": 0.26, "nf4": 0.14}
DEFAULT_CPU_BANDWIDTH_GBS = 20.0
DEFAULT_ADAPTER_OVERHEAD = 0.15
GPU_EFFICIENCY = {"fp32": 0.6, "bf16": 0.6, "nf4": 0.3}
GPU_TOKEN_FLOOR_S = 0.008  # kernel launches for ~30 layers: a GPU decodes no faster than this
DEFAULT_GPU_BANDWIDTH_GBS = 300.0
CALIBRATION_TOKENS = 32


@dataclass(frozen=True)
class Calibration:
    machine: str
    described: str
    bandwidth_gbs: float
    weight_bytes: dict[str, int]
    seconds_per_token: dict[str, float]
    adapter_overhead: dict[str, float]  # per precision: extra time of one adapter, as a share
    measured_at: str
    library_versions: dict[str, str] = field(default_factory=dict)

    def efficiency(self, precision: str) -> float:
        bytes_per_second = self.weight_bytes[precision] / self.seconds_per_token[precision]
        return bytes_per_second / (self.bandwidth_gbs * 1e9)


@dataclass(frozen=True)
class Speed:
    seconds_per_token: float
    basis: str  # how it was obtained, for the explanation

    @property
    def tokens_per_second(self) -> float:
        return 1 / self.seconds_per_token


def machine_id(hardware: Hardware | None = None) -> str:
    """A short fingerprint of this machine (CPU model, cores, RAM, GPU)."""
    hardware = hardware or detect_hardware()
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    text = f"{cpu}|{hardware.cpu_cores}|{hardware.ram_bytes // 2**30}|{hardware.gpu_name}"
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def calibration_path(home: Path, machine: str | None = None) -> Path:
    return home / "routing" / f"calibration-{machine or machine_id()}.json"


def load_calibration(home: Path) -> Calibration | None:
    """This machine's cached calibration, or None (also for one written by an older Viz: run
    `viz recommend --calibrate` again)."""
    path = calibration_path(home)
    try:
        data = json.loads(path.read_text())
        if not isinstance(data.get("adapter_overhead"), dict):
            return None
        return Calibration(**data)
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def estimate_speed(
    hardware: Hardware,
    precision: str,
    weight_bytes: int,
    adapters: int,
    calibration: Calibration | None,
) -> Speed:
    """Seconds per token for `weight_bytes` of `precision` weights with `adapters` applied."""
    if calibration is not None and precision not in calibration.seconds_per_token:
        calibration = None  # not measured in this precision
    overhead = (
        calibration.adapter_overhead.get(precision, DEFAULT_ADAPTER_OVERHEAD)
        if calibration
        else DEFAULT_ADAPTER_OVERHEAD
    )
    factor = 1 + adapters * overhead
    if calibration is not None and hardware.name == "detected" and hardware.gpu_bytes == 0:
        scale = weight_bytes / calibration.weight_bytes[precision]
        seconds = calibration.seconds_per_token[precision] * scale * factor
        return Speed(seconds, "measured on this machine (viz recommend --calibrate)")
    if hardware.gpu_bytes:
        bandwidth = hardware.bandwidth_gbs or DEFAULT_GPU_BANDWIDTH_GBS
        seconds = max(
            weight_bytes / (bandwidth * 1e9 * GPU_EFFICIENCY[precision]), GPU_TOKEN_FLOOR_S
        )
        return Speed(seconds * factor, f"estimated from {bandwidth:g} GB/s GPU bandwidth")
    bandwidth = hardware.bandwidth_gbs or DEFAULT_CPU_BANDWIDTH_GBS
    if calibration is not None:
        efficiency = calibration.efficiency(precision)
        basis = f"estimated from {bandwidth:g} GB/s and this machine's calibration"
    else:
        efficiency = DEFAULT_CPU_EFFICIENCY[precision]
        basis = f"estimated from {bandwidth:g} GB/s (uncalibrated: run viz recommend --calibrate)"
    seconds = weight_bytes / (bandwidth * 1e9 * efficiency)
    return Speed(seconds * factor, basis)


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
        seconds[precision] = _seconds_per_token(loaded.model)
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
    # deferred: torch is heavy
    import torch

    source = torch.ones(64 * 2**20)  # 256 MB of fp32
    target = torch.empty_like(source)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        target.copy_(source)
        best = min(best, time.perf_counter() - start)
    return 2 * source.numel() * 4 / best / 1e9  # read + write


def _seconds_per_token(model: Any) -> float:
    """Decode time per token at batch 1 (greedy, KV cache), after a warm-up, best of 2."""
    # deferred: torch is heavy
    import torch

    ids = torch.tensor([[1, 504, 3458, 282, 4649, 314]])
    best = float("inf")
    with torch.inference_mode():
        for _ in range(2):
            output = model(ids, use_cache=True)
            cache, token = output.past_key_values, output.logits[:, -1:].argmax(-1)
            start = time.perf_counter()
            for _step in range(CALIBRATION_TOKENS):
                output = model(token, past_key_values=cache, use_cache=True)
                cache, token = output.past_key_values, output.logits[:, -1:].argmax(-1)
            best = min(best, (time.perf_counter() - start) / CALIBRATION_TOKENS)
    return best


def _adapter_overhead(model: Any, base_seconds: float) -> float:
    """Extra time per token of one rank-8 LoRA on every linear layer, applied the way `viz
    serve` applies adapters (the multi-LoRA forward hooks)."""
    from viz.serving.multi_lora import LoraBatch, install_hooks

    current: list[LoraBatch | None] = [LoraBatch.for_rows([[(random_adapter(model, 0), 1.0)]])]
    handles = install_hooks(model, current)
    try:
        seconds = _seconds_per_token(model)
    finally:
        for handle in handles:
            handle.remove()
    return max(0.0, seconds / base_seconds - 1)


def random_adapter(model: Any, seed: int, rank: int = 8) -> Any:
    """A random rank-`rank` LoRA on every linear layer of `model` (but the head), for timing."""
    # deferred: torch is heavy
    import torch

    from viz.serving.loaded_adapter import LoadedAdapter

    generator = torch.Generator().manual_seed(seed)
    modules = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and not name.endswith("lm_head"):
            a = torch.randn(rank, module.in_features, generator=generator) * 0.01
            b = torch.randn(module.out_features, rank, generator=generator) * 0.01
            modules[name] = (a, b)
    return LoadedAdapter(-1 - seed, f"random-{seed}", rank, 2.0, modules, 0)
