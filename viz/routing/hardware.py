"""Hardware profiles: what a user's machine can hold, detected or declared.

The recommender (issue 9) sizes a base variant and an adapter chain to a profile. A profile is
detected (CPU cores, RAM, and the GPU's name and memory through torch), named by a preset, or
declared by numbers:

    detect_hardware()
    parse_hardware("laptop-16gb")
    parse_hardware("ram=4GB")                 # cores default to 4
    parse_hardware("gpu=24GB,ram=64GB,cores=16")
    parse_hardware("ram=8GB,bw=20GB")         # memory bandwidth 20 GB/s

Sizes take B, KB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024); a bare
number is bytes. `budget_bytes` is what a model may use: 90% of a GPU's memory, or 75% of RAM
on a CPU-only machine (the system and the server need the rest).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace

from viz.errors import InvalidInput

__all__ = ["PRESETS", "Hardware", "detect_hardware", "parse_hardware", "parse_size"]

GB = 1000**3
GIB = 1024**3
GPU_SHARE = 0.90
RAM_SHARE = 0.75
_UNITS = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Hardware:
    """A machine: CPU cores, RAM bytes, its GPU (name and memory bytes; none if 0), and the
    memory bandwidth of the device that runs the model (GB/s; 0 = unknown, measured by
    `viz recommend --calibrate` on this machine, assumed elsewhere)."""

    name: str
    cpu_cores: int
    ram_bytes: int
    gpu_name: str | None = None
    gpu_bytes: int = 0
    bandwidth_gbs: float = 0.0

    @property
    def device(self) -> str:
        return "cuda" if self.gpu_bytes else "cpu"

    @property
    def budget_bytes(self) -> int:
        """Bytes a model (weights, KV cache, adapters) may take on this machine's device."""
        if self.gpu_bytes:
            return int(self.gpu_bytes * GPU_SHARE)
        return int(self.ram_bytes * RAM_SHARE)

    def describe(self) -> str:
        gpu = (
            f", GPU {self.gpu_name or 'unnamed'} {self.gpu_bytes / GB:.0f} GB"
            if self.gpu_bytes
            else ""
        )
        return f"{self.name}: {self.cpu_cores} cores, {self.ram_bytes / GB:.1f} GB RAM{gpu}"


PRESETS: dict[str, Hardware] = {
    h.name: h
    for h in [
        # Bandwidths: vendor figures for the GPUs (T4 320 GB/s ... H100 SXM 3,350 GB/s);
        # for the CPUs, typical copy bandwidths of LPDDR4 (Pi 4), dual- and quad-channel DDR4/5.
        Hardware("raspberry-pi-4gb", 4, 4 * GIB, bandwidth_gbs=4),
        Hardware("laptop-8gb", 8, 8 * GIB, bandwidth_gbs=20),
        Hardware("laptop-16gb", 8, 16 * GIB, bandwidth_gbs=35),
        Hardware("workstation-64gb", 16, 64 * GIB, bandwidth_gbs=70),
        Hardware("t4-16gb", 8, 32 * GIB, "NVIDIA T4", 16 * GIB, 320),
        Hardware("rtx4090-24gb", 16, 64 * GIB, "NVIDIA GeForce RTX 4090", 24 * GIB, 1008),
        Hardware("a100-40gb", 32, 256 * GIB, "NVIDIA A100 40GB", 40 * GIB, 1555),
        Hardware("a100-80gb", 32, 512 * GIB, "NVIDIA A100 80GB", 80 * GIB, 2039),
        Hardware("h100-80gb", 32, 512 * GIB, "NVIDIA H100 80GB", 80 * GIB, 3350),
    ]
}


def detect_hardware() -> Hardware:
    """This machine: cores available to this process, total RAM, the first CUDA GPU if any."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    gpu_name, gpu_bytes = None, 0
    try:
        # deferred: torch is heavy
        import torch

        if torch.cuda.is_available():
            properties = torch.cuda.get_device_properties(0)
            gpu_name, gpu_bytes = properties.name, int(properties.total_memory)
    except ImportError:
        pass
    return Hardware("detected", cores, int(ram), gpu_name, gpu_bytes)


def parse_hardware(spec: str) -> Hardware:
    """A preset name, or `key=value` pairs (ram, gpu, cores) separated by commas.

    Raises:
        InvalidInput: an unknown preset (the message lists them), key or size.
    """
    text = spec.strip().lower()
    if text in PRESETS:
        return PRESETS[text]
    if "=" not in text:
        raise InvalidInput(
            f"unknown hardware preset {spec!r}; presets: {', '.join(PRESETS)}; or declare it, "
            "e.g. 'ram=4GB' or 'gpu=24GB,ram=64GB,cores=16'"
        )
    hardware = Hardware("declared", 4, 0)
    problems = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, _, value = part.partition("=")
        key = key.strip()
        try:
            if key == "ram":
                hardware = replace(hardware, ram_bytes=parse_size(value))
            elif key == "gpu":
                hardware = replace(hardware, gpu_bytes=parse_size(value), gpu_name="declared")
            elif key in ("bw", "bandwidth"):
                hardware = replace(hardware, bandwidth_gbs=parse_size(value) / GB)
            elif key == "cores":
                if (
                    not (value.strip().isascii() and value.strip().isdigit())
                    or not 1 <= int(value) <= 4096
                ):
                    raise InvalidInput(f"cores {value!r} must be a whole number 1..4096")
                hardware = replace(hardware, cpu_cores=int(value))
            else:
                raise InvalidInput(f"unknown key {key!r}: use ram, gpu, cores or bw (GB/s)")
        except InvalidInput as error:
            problems.append(error.message)
    if not hardware.ram_bytes and not hardware.gpu_bytes:
        problems.append("declare at least ram=... or gpu=...")
    if problems:
        raise InvalidInput(f"hardware {spec!r}: " + "; ".join(problems))
    if not hardware.ram_bytes:  # a GPU box has at least as much RAM as GPU memory
        hardware = replace(hardware, ram_bytes=hardware.gpu_bytes)
    return hardware


def parse_size(value: str) -> int:
    """Bytes in `value` such as '4GB', '512 MiB', '1.5TB' or '1024'.

    Raises:
        InvalidInput: not a positive size with a known unit.
    """
    match = _SIZE.match(value)
    if not match or match.group(2).lower() not in {"", *_UNITS}:
        raise InvalidInput(
            f"size {value!r} must be a number with a unit such as 4GB, 512MiB or 1.5TB"
        )
    number = float(match.group(1)) * _UNITS.get(match.group(2).lower(), 1)
    if number < 1:
        raise InvalidInput(f"size {value!r} must be at least one byte")
    return int(number)
