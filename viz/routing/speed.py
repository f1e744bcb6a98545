"""Speed: seconds per generated token of a base variant with n adapters, on some hardware.

Decoding one token reads every weight once, so it is bound by memory bandwidth:

    seconds per token = weight bytes / (bandwidth x efficiency[precision]) x (1 + n x overhead)

`viz recommend --calibrate` measures, on this machine, with the engine it measures
(`viz.serving.engines.builtin.calibrate`), and caches per machine in
`$VIZ_HOME/routing/calibration-<machine id>.json` (this module only reads it):
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
from dataclasses import dataclass, field
from pathlib import Path

from viz.routing.hardware import Hardware, detect_hardware

__all__ = [
    "Calibration",
    "Speed",
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
