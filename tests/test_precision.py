"""`--method auto` and `--base-precision auto`: train in the precision this machine runs fast."""

from __future__ import annotations

from pathlib import Path

import pytest

from viz.errors import InvalidInput
from viz.models.precision import choose_training, native_bf16

AVX2_ONLY = "flags\t\t: fpu sse sse2 avx avx2 fma\n"
SAPPHIRE_RAPIDS = "flags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"


def _cpuinfo(tmp_path: Path, text: str) -> Path:
    path = tmp_path / f"cpuinfo-{abs(hash(text))}"  # one file per CPU: flags are read once
    path.write_text("processor\t: 0\n" + text)
    return path


def test_native_bf16_is_read_from_the_cpu_flags(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("VIZ_CPU_NATIVE_BF16", raising=False)
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    assert native_bf16(_cpuinfo(tmp_path, SAPPHIRE_RAPIDS))
    assert not native_bf16(_cpuinfo(tmp_path, AVX2_ONLY))
    assert not native_bf16(tmp_path / "missing")
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")  # PyTorch then emulates bf16
    assert not native_bf16(_cpuinfo(tmp_path, SAPPHIRE_RAPIDS))


def test_a_cpu_without_native_bf16_trains_lora_on_fp32(monkeypatch) -> None:
    monkeypatch.setenv("VIZ_CPU_NATIVE_BF16", "0")
    choice = choose_training("auto", None, cuda=False)
    assert (choice.method, choice.base_precision) == ("lora", "fp32")
    assert "no native bf16" in choice.reason
    assert choose_training("lora", "auto", cuda=False).base_precision == "fp32"


def test_qlora_stays_the_default_with_native_bf16_and_on_cuda(monkeypatch) -> None:
    monkeypatch.setenv("VIZ_CPU_NATIVE_BF16", "1")
    assert choose_training("auto", None, cuda=False).method == "qlora"
    assert choose_training("lora", "auto", cuda=False).base_precision == "bf16"
    monkeypatch.setenv("VIZ_CPU_NATIVE_BF16", "0")
    on_cuda = choose_training("auto", None, cuda=True)
    assert (on_cuda.method, on_cuda.base_precision) == ("qlora", "nf4")


def test_an_explicit_choice_is_kept(monkeypatch) -> None:
    monkeypatch.setenv("VIZ_CPU_NATIVE_BF16", "0")
    assert choose_training("qlora", None, cuda=False).method == "qlora"
    assert choose_training("lora", "bf16", cuda=False).base_precision == "bf16"
    assert choose_training("auto", "bf16", cuda=False).method == "lora"
    assert choose_training("auto", "nf4", cuda=False).method == "qlora"


def test_auto_precision_with_qlora_is_refused() -> None:
    with pytest.raises(InvalidInput, match="drop --base-precision"):
        choose_training("qlora", "auto", cuda=False)
