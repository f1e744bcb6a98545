"""Reading a safetensors header without loading tensors (and without trusting it blindly),
and the suffixes of pickled weight files Viz refuses to open."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any

from viz.errors import InvalidInput
from viz.store.blobs import sha256_file

HEADER_BYTES_MAX = 100 * 1024 * 1024
# Formats that unpickle on load (torch.save, pickle, numpy with allow_pickle, joblib).
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".npy", ".npz", ".joblib")


def read_header(
    path: Path, *, header_bytes_max: int = HEADER_BYTES_MAX
) -> tuple[dict[str, Any], int]:
    """The JSON header of a safetensors file and its length in bytes (tensor data starts at
    8 + length).

    Raises:
        InvalidInput: the file is too short, or its header is oversized or not JSON.
    """
    with path.open("rb") as file:
        prefix = file.read(8)
        if len(prefix) != 8:
            raise InvalidInput(f"{path.name}: truncated, no safetensors header")
        (length,) = struct.unpack("<Q", prefix)
        if length > header_bytes_max or length > path.stat().st_size - 8:
            raise InvalidInput(
                f"{path.name}: header of {length} bytes is over the {header_bytes_max}-byte "
                "limit or the file size"
            )
        raw = file.read(length)
    try:
        header = json.loads(raw)
    except ValueError as error:
        raise InvalidInput(f"{path.name}: safetensors header is not JSON ({error})") from error
    if not isinstance(header, dict):
        raise InvalidInput(f"{path.name}: safetensors header is not a JSON object")
    return header, length


def folder_weights_sha256(folder: Path) -> str:
    """One sha256 over a folder's `*.safetensors` files: sha256 of `name sha256` lines, sorted.

    For a single-file model this is still stable and cheap to recompute.

    Raises:
        InvalidInput: the folder holds no safetensors files.
    """
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise InvalidInput(
            f"{folder} holds no *.safetensors files; Viz loads safetensors only "
            "(convert .bin/.pt weights with transformers' save_pretrained(safe_serialization=True))"
        )
    lines = "".join(f"{file.name} {sha256_file(file)}\n" for file in files)
    return hashlib.sha256(lines.encode()).hexdigest()
