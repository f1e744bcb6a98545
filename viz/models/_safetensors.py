"""Reading a safetensors header without loading tensors (and without trusting it blindly)."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from viz.errors import InvalidInput

HEADER_BYTES_MAX = 100 * 1024 * 1024


def read_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file.

    Raises:
        InvalidInput: the file is too short, or its header is oversized or not JSON.
    """
    with path.open("rb") as file:
        prefix = file.read(8)
        if len(prefix) != 8:
            raise InvalidInput(f"{path} is truncated: no safetensors header")
        (length,) = struct.unpack("<Q", prefix)
        if length > HEADER_BYTES_MAX or length > path.stat().st_size - 8:
            raise InvalidInput(f"{path}: safetensors header length {length} is impossible")
        raw = file.read(length)
    try:
        header = json.loads(raw)
    except ValueError as error:
        raise InvalidInput(f"{path}: safetensors header is not JSON ({error})") from error
    if not isinstance(header, dict):
        raise InvalidInput(f"{path}: safetensors header is not a JSON object")
    return header
