"""Screening an adapter upload before it enters the catalogue.

Stages, in order; a `fail` rejects the upload (nothing is stored), a `flag` holds it as
`pending` for an admin, and only a clean run is `approved`:

1. files      only `adapter_config.json`, `adapter_model.safetensors` (+ README.md,
              viz-manifest.json); pickles and zips refused by name and by magic bytes, never
              opened by a deserialiser
2. header     safetensors header within its size limit, known dtypes, offsets inside the file,
              tensors contiguous with no overlap and no trailing bytes (polyglots)
3. config     a LoRA config with a rank within limits
4. base       the base named by the manifest/config is the registered one (id + weights sha256)
5. tensors    every name is `<module>.lora_A|B.weight` of a linear layer of the base, with shapes
              (r, in) and (out, r)
6. values     every value finite
7. outliers   norm of the weight update against the catalogue on the same base
8. duplicates cosine of the update's sketch against every other creator's adapter on the base
9. canary     base vs base+adapter on fixed out-of-domain prompts and a trigger sweep: a trigger
              that moves the output far more than clean prompts do suggests a backdoor (trojan
              LoRA, arXiv 2312.00374)
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from viz.errors import InvalidInput
from viz.market.canary import check_canary
from viz.models._safetensors import PICKLE_SUFFIXES, read_header

__all__ = [
    "CatalogueEntry",
    "Check",
    "ScreeningLimits",
    "ScreeningReport",
    "Upload",
    "screen_upload",
]

ALLOWED_FILES = {
    "adapter_config.json",
    "adapter_model.safetensors",
    "README.md",
    "viz-manifest.json",
}
DTYPE_BYTES = {"F32": 4, "F16": 2, "BF16": 2}
SKETCH_PROBES = 4
SKETCH_SEED = 6962
DUPLICATE_COSINE = 0.95
OUTLIER_FACTOR = 10.0
OUTLIER_MIN_CATALOGUE = 5


@dataclass(frozen=True)
class ScreeningLimits:
    adapter_bytes_max: int = 512 * 1024 * 1024
    header_bytes_max: int = 1024 * 1024
    config_bytes_max: int = 256 * 1024
    rank_max: int = 256


@dataclass(frozen=True)
class Check:
    stage: str
    outcome: str  # pass | fail | flag | skip
    detail: str
    seconds: float = 0.0


@dataclass(frozen=True)
class CatalogueEntry:
    """What screening compares against: another version on the same base."""

    label: str
    owner_id: int
    update_norm: float
    sketch: bytes


@dataclass
class ScreeningReport:
    checks: list[Check] = field(default_factory=list)

    @property
    def status(self) -> str:
        outcomes = {check.outcome for check in self.checks}
        if "fail" in outcomes:
            return "rejected"
        return "pending" if "flag" in outcomes else "approved"

    def problems(self) -> list[str]:
        return [f"{c.stage}: {c.detail}" for c in self.checks if c.outcome in ("fail", "flag")]

    def to_json(self) -> str:
        return json.dumps({"status": self.status, "checks": [asdict(c) for c in self.checks]})


@dataclass
class Upload:
    """What the file checks establish about an upload, filled in stage by stage."""

    folder: Path
    config: dict[str, Any] = field(default_factory=dict)
    manifest: dict[str, Any] | None = None
    header: dict[str, Any] = field(default_factory=dict)
    tensors: dict[str, Any] = field(default_factory=dict)
    rank: int = 0
    size_bytes: int = 0
    update_norm: float = 0.0
    sketch: bytes = b""


def screen_upload(
    folder: Path,
    *,
    base_id: str,
    base_weights_sha256: str,
    base_folder: Path,
    catalogue: Sequence[CatalogueEntry],
    owner_id: int,
    limits: ScreeningLimits,
) -> tuple[ScreeningReport, Upload]:
    """Run every stage on the adapter folder; stop at the first failing stage."""
    upload, report = Upload(folder), ScreeningReport()
    weights = folder / "adapter_model.safetensors"
    stages: list[tuple[str, Callable[[], tuple[str, str]]]] = [
        ("files", lambda: _check_files(folder, limits)),
        ("header", lambda: _check_header(weights, upload, limits)),
        ("config", lambda: _check_config(folder, upload, limits)),
        ("base", lambda: _check_base(upload, base_id, base_weights_sha256)),
        ("tensors", lambda: _check_tensors(upload, base_folder)),
        ("values", lambda: _check_values(weights, upload)),
        ("outliers", lambda: _check_outliers(upload, catalogue)),
        ("duplicates", lambda: _check_duplicates(upload, catalogue, owner_id)),
        ("canary", lambda: check_canary(upload.folder, base_folder, base_weights_sha256)),
    ]
    for stage, run in stages:
        started = time.perf_counter()
        try:
            outcome, detail = run()
        except InvalidInput as error:
            outcome, detail = "fail", error.message
        report.checks.append(Check(stage, outcome, detail, time.perf_counter() - started))
        if outcome == "fail":
            break
    return report, upload


def _check_files(folder: Path, limits: ScreeningLimits) -> tuple[str, str]:
    if not folder.is_dir():
        raise InvalidInput(f"{folder} is not a folder; give the adapter's folder")
    problems = []
    for path in sorted(folder.iterdir()):
        if path.is_dir() or path.is_symlink():
            problems.append(f"{path.name}: folders and links are not accepted")
        elif path.suffix.lower() in PICKLE_SUFFIXES:
            problems.append(
                f"{path.name}: pickled weights are refused (never unpickled); "
                "save with safe_serialization=True"
            )
        elif path.name not in ALLOWED_FILES:
            problems.append(f"{path.name}: unexpected file (allowed: {sorted(ALLOWED_FILES)})")
        elif _magic(path) in (b"\x80", b"PK"):
            problems.append(
                f"{path.name}: contains a pickle or zip archive, not what its name says"
            )
    for required in ("adapter_config.json", "adapter_model.safetensors"):
        if not (folder / required).is_file():
            problems.append(f"{required} is missing")
    weights = folder / "adapter_model.safetensors"
    if weights.is_file() and weights.stat().st_size > limits.adapter_bytes_max:
        problems.append(
            f"adapter_model.safetensors is {weights.stat().st_size} bytes, over "
            f"the {limits.adapter_bytes_max}-byte limit"
        )
    if problems:
        raise InvalidInput("; ".join(problems))
    return "pass", "only safetensors and JSON/markdown files"


def _magic(path: Path) -> bytes:
    with path.open("rb") as file:
        start = file.read(2)
    if start[:1] == b"\x80":
        return b"\x80"
    return start


def _check_header(path: Path, upload: Upload, limits: ScreeningLimits) -> tuple[str, str]:
    size = path.stat().st_size
    header, length = read_header(path, header_bytes_max=limits.header_bytes_max)
    header.pop("__metadata__", None)
    spans = sorted(_tensor_span(name, entry) for name, entry in header.items())
    data_bytes, position = size - 8 - length, 0
    for begin, end, name in spans:
        if begin != position:
            kind = "overlaps the previous tensor" if begin < position else "leaves a gap"
            raise InvalidInput(f"adapter_model.safetensors: tensor {name} {kind}")
        position = end
    if position != data_bytes:
        raise InvalidInput(
            f"adapter_model.safetensors: {data_bytes - position} bytes after "
            "the last tensor (a polyglot file?) or offsets past the end"
        )
    upload.header, upload.size_bytes = header, size
    return "pass", f"{len(header)} tensors, {size} bytes, offsets contiguous"


def _tensor_span(name: str, entry: Any) -> tuple[int, int, str]:
    if not isinstance(entry, dict) or entry.get("dtype") not in DTYPE_BYTES:
        dtype = entry.get("dtype") if isinstance(entry, dict) else None
        raise InvalidInput(
            f"adapter_model.safetensors: tensor {name} has dtype {dtype!r}; "
            f"allowed: {', '.join(DTYPE_BYTES)}"
        )
    shape, offsets = entry.get("shape"), entry.get("data_offsets")
    if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
        raise InvalidInput(f"adapter_model.safetensors: tensor {name} has a bad shape {shape}")
    if not (
        isinstance(offsets, list)
        and len(offsets) == 2
        and all(isinstance(o, int) for o in offsets)
        and 0 <= offsets[0] <= offsets[1]
    ):
        raise InvalidInput(f"adapter_model.safetensors: tensor {name} has bad offsets {offsets}")
    expected = math.prod(shape) * DTYPE_BYTES[entry["dtype"]]
    if offsets[1] - offsets[0] != expected:
        raise InvalidInput(
            f"adapter_model.safetensors: tensor {name} spans "
            f"{offsets[1] - offsets[0]} bytes, its shape needs {expected}"
        )
    return offsets[0], offsets[1], name


def _check_config(folder: Path, upload: Upload, limits: ScreeningLimits) -> tuple[str, str]:
    path = folder / "adapter_config.json"
    if path.stat().st_size > limits.config_bytes_max:
        raise InvalidInput(f"adapter_config.json is over {limits.config_bytes_max} bytes")
    try:
        config = json.loads(path.read_text())
        manifest_path = folder / "viz-manifest.json"
        manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else None
    except (OSError, ValueError) as error:
        raise InvalidInput(
            f"adapter_config.json or viz-manifest.json is not JSON: {error}"
        ) from error
    if not isinstance(config, dict) or config.get("peft_type") != "LORA":
        raise InvalidInput("adapter_config.json: peft_type must be LORA")
    rank, alpha = config.get("r"), config.get("lora_alpha")
    if not isinstance(rank, int) or not 0 < rank <= limits.rank_max:
        raise InvalidInput(f"adapter_config.json: rank r={rank!r} must be 1..{limits.rank_max}")
    if not isinstance(alpha, int | float) or alpha <= 0:
        raise InvalidInput(f"adapter_config.json: lora_alpha={alpha!r} must be positive")
    if config.get("rank_pattern") or config.get("alpha_pattern") or config.get("use_dora"):
        raise InvalidInput("adapter_config.json: rank/alpha patterns and DoRA are not supported")
    upload.config, upload.manifest, upload.rank = config, manifest, rank
    return "pass", f"LoRA r={rank}, alpha={alpha}"


def _check_base(upload: Upload, base_id: str, base_weights_sha256: str) -> tuple[str, str]:
    if upload.manifest is not None:
        named = upload.manifest.get("base", {})
        if named.get("id") != base_id or named.get("weights_sha256") != base_weights_sha256:
            raise InvalidInput(
                f"the manifest names base {named.get('id')!r} with weights "
                f"{str(named.get('weights_sha256'))[:12]}..., the catalogue's {base_id!r} has "
                f"{base_weights_sha256[:12]}...; publish it for the base it was trained on"
            )
        return "pass", f"manifest names {base_id} with matching weights sha256"
    named = upload.config.get("base_model_name_or_path")
    return "pass", (
        f"plain PEFT adapter (config names {named!r}); base {base_id} is "
        "checked by tensor shapes only"
    )


def _check_tensors(upload: Upload, base_folder: Path) -> tuple[str, str]:
    linear = _linear_shapes(base_folder)
    problems, modules = [], set()
    for name, entry in upload.header.items():
        module, _, kind = name.rpartition(".lora_")
        path = module.removeprefix("base_model.model.")
        if kind not in ("A.weight", "B.weight") or path not in linear:
            problems.append(f"{name}: not a LoRA weight of a linear layer of the base")
            continue
        out_features, in_features = linear[path]
        expected = [upload.rank, in_features] if kind == "A.weight" else [out_features, upload.rank]
        if entry["shape"] != expected:
            problems.append(f"{name}: shape {entry['shape']}, expected {expected}")
        modules.add((path, kind))
    unpaired = {p for p, k in modules} - {
        p for p, k in modules if (p, "A.weight") in modules and (p, "B.weight") in modules
    }
    problems += [f"{p}: lora_A and lora_B must both be present" for p in sorted(unpaired)]
    if not modules:
        problems.append("no LoRA tensors")
    if problems:
        shown = problems[:5] + ([f"... {len(problems) - 5} more"] if len(problems) > 5 else [])
        raise InvalidInput("tensors do not fit the base: " + "; ".join(shown))
    return "pass", f"{len(modules) // 2} adapted linear layers, shapes match the base"


def _linear_shapes(base_folder: Path) -> dict[str, tuple[int, int]]:
    # deferred: torch and transformers are heavy
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(base_folder))
    return {
        name: (m.out_features, m.in_features)
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.Linear)
    }


def _check_values(path: Path, upload: Upload) -> tuple[str, str]:
    # deferred: torch and safetensors.torch are heavy
    import torch
    from safetensors.torch import load_file

    tensors = load_file(path)
    bad = [name for name, t in tensors.items() if not bool(torch.isfinite(t).all())]
    if bad:
        raise InvalidInput(f"non-finite values (NaN or inf) in {', '.join(sorted(bad)[:5])}")
    upload.tensors = {name: t.float() for name, t in tensors.items()}
    upload.update_norm, upload.sketch = _update_norm_and_sketch(upload)
    return "pass", f"all finite; update norm {upload.update_norm:.4g}"


def _update_norm_and_sketch(upload: Upload) -> tuple[float, bytes]:
    """Frobenius norm of the whole update (sum over layers of scale * B @ A) and a sketch of it:
    P_out^T delta_W P_in per layer, for fixed Gaussian probes P (4 x 4 numbers a layer, ~13 KB
    for SmolLM2 at any rank). Near-duplicate detection compares sketches by cosine; they are
    invariant to how the update is split between A and B (random projections keep cosines)."""
    # deferred: torch is heavy
    import torch

    scale = upload.config["lora_alpha"] / upload.rank
    squared, pieces = 0.0, []
    for name in sorted(upload.tensors):
        if not name.endswith("lora_A.weight"):
            continue
        a = upload.tensors[name]
        b = upload.tensors[name.replace("lora_A.weight", "lora_B.weight")]
        probes_in = _probes(a.shape[1], SKETCH_SEED)
        probes_out = _probes(b.shape[0], SKETCH_SEED + 1)
        pieces.append((probes_out.T @ (scale * (b @ (a @ probes_in)))).flatten())
        squared += float(torch.linalg.matrix_norm(scale * (b @ a)) ** 2)
    sketch = torch.cat(pieces).to(torch.float32).numpy().tobytes()
    return math.sqrt(squared), sketch


def _probes(size: int, seed: int) -> Any:
    # deferred: torch is heavy
    import torch

    generator = torch.Generator().manual_seed(seed * 100_003 + size)
    return torch.randn(size, SKETCH_PROBES, generator=generator) / math.sqrt(size)


def _check_outliers(upload: Upload, catalogue: Sequence[CatalogueEntry]) -> tuple[str, str]:
    if len(catalogue) < OUTLIER_MIN_CATALOGUE:
        return "skip", (
            f"{len(catalogue)} adapters on this base; outlier test needs {OUTLIER_MIN_CATALOGUE}"
        )
    norms = sorted(entry.update_norm for entry in catalogue)
    median = norms[len(norms) // 2]
    if upload.update_norm > OUTLIER_FACTOR * median:
        return "flag", (
            f"update norm {upload.update_norm:.4g} is over {OUTLIER_FACTOR:g}x the "
            f"catalogue median {median:.4g}"
        )
    return "pass", f"update norm {upload.update_norm:.4g} vs catalogue median {median:.4g}"


def _check_duplicates(
    upload: Upload, catalogue: Sequence[CatalogueEntry], owner_id: int
) -> tuple[str, str]:
    # deferred: torch is heavy
    import torch

    mine = torch.frombuffer(bytearray(upload.sketch), dtype=torch.float32)
    closest, label = 0.0, ""
    for entry in catalogue:
        if entry.owner_id == owner_id or len(entry.sketch) != len(upload.sketch):
            continue
        other = torch.frombuffer(bytearray(entry.sketch), dtype=torch.float32)
        cosine = float(torch.nn.functional.cosine_similarity(mine, other, dim=0))
        if cosine > closest:
            closest, label = cosine, entry.label
    if closest >= DUPLICATE_COSINE:
        return "flag", (
            f"update has cosine {closest:.3f} with {label} by another creator: a "
            "possible re-upload of someone else's work"
        )
    return "pass", f"highest cosine with another creator's adapter: {closest:.3f}"
