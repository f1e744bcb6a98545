"""Routing, part 1: hardware profiles, detected, from presets, or declared by numbers."""

from __future__ import annotations

import os

import pytest

from viz.errors import InvalidInput
from viz.routing.hardware import GB, GIB, PRESETS, detect_hardware, parse_hardware, parse_size


def test_this_machine_is_detected() -> None:
    hardware = detect_hardware()
    assert hardware.name == "detected"
    assert 1 <= hardware.cpu_cores <= (os.cpu_count() or 1)
    assert hardware.ram_bytes > 256 * 1024**2
    assert hardware.budget_bytes < hardware.ram_bytes or hardware.gpu_bytes


def test_presets_by_name_and_their_budgets() -> None:
    pi = parse_hardware("raspberry-pi-4gb")
    assert (pi.cpu_cores, pi.ram_bytes, pi.device) == (4, 4 * GIB, "cpu")
    assert pi.budget_bytes == int(4 * GIB * 0.75)
    a100 = parse_hardware(" A100-80GB ")
    assert a100.device == "cuda" and a100.gpu_bytes == 80 * GIB
    assert a100.budget_bytes == int(80 * GIB * 0.9)
    assert "laptop-16gb" in PRESETS and "h100-80gb" in PRESETS


def test_declared_numbers() -> None:
    assert parse_hardware("ram=4GB").ram_bytes == 4 * GB
    box = parse_hardware("gpu=24GB,ram=64GiB,cores=16")
    assert (box.gpu_bytes, box.ram_bytes, box.cpu_cores) == (24 * GB, 64 * GIB, 16)
    assert parse_hardware("gpu=24GB").ram_bytes == 24 * GB, "RAM at least the GPU's memory"
    assert parse_size("512 MiB") == 512 * 1024**2
    assert parse_size("1.5TB") == 1_500_000_000_000
    assert parse_size("1024") == 1024


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("cray-1", "presets: raspberry-pi-4gb, laptop-8gb"),
        ("ram=4XB", "unit"),
        ("ram=-4GB", "unit"),
        ("ram=0.1B", "at least one byte"),
        ("cores=0,ram=4GB", "cores"),
        ("disk=1TB", "unknown key 'disk'"),
        ("cores=4", "declare at least ram"),
    ],
)
def test_bad_profiles_say_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_hardware(spec)
