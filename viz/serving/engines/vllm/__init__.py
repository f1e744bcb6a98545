"""The vLLM engine: vLLM OpenAI servers behind Viz's gateway (`viz serve --engine vllm --vllm URL`).

`client` talks to one server (models, runtime LoRA loading, streamed token-id completions);
`engine` implements the `Engine` protocol over several: compositions stacked into one exact LoRA,
placement by rendezvous hashing, fail-over before the first token, vLLM's usage for settlement.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from viz.errors import InvalidInput
from viz.serving.engines.vllm.client import EngineUnavailable, ServedModel, VllmServer
from viz.serving.engines.vllm.engine import (
    Stacked,
    VllmEngine,
    VllmGeneration,
    rendezvous,
    write_zero_adapter,
)

log = logging.getLogger(__name__)

__all__ = [
    "EngineUnavailable",
    "ServedModel",
    "Stacked",
    "VllmEngine",
    "VllmGeneration",
    "VllmServer",
    "check_served",
    "open_vllm",
    "rendezvous",
]


def open_vllm(
    record: Any,
    models_dir: Path,
    *,
    urls: list[str],
    adapter_dir: Path,
    rank_max: int,
    batch_max: int,
    queue_max: int,
    adapters_max: int,
    dir_bytes_max: int,
) -> VllmEngine:
    """An engine over the vLLM servers at `urls`, each checked to serve base `record`.

    Raises:
        InvalidInput: no URL, or a server serves another model.
        EngineUnavailable: no server can be reached (one that cannot is skipped until it can).
    """
    # deferred: the tokenizer and the model cache import transformers
    from viz.models.loading import ensure_cached
    from viz.training.recipe import load_tokenizer

    if not urls:
        raise InvalidInput("the vLLM engine needs at least one server: add --vllm http://HOST:PORT")
    folder = ensure_cached(record, models_dir)
    servers = [VllmServer(url) for url in urls]
    names, down = set(), []
    for server in servers:  # one server down must not keep the gateway from starting
        try:
            names.add(check_served(server, record.id, folder).name)
        except EngineUnavailable as error:
            down.append(server.url)
            log.warning("%s; it is skipped until it answers", error.message)
    if len(down) == len(servers):
        raise EngineUnavailable(f"no vLLM server answers ({', '.join(down)}): start them first")
    if len(names) > 1:
        raise InvalidInput(f"the vLLM servers name the base differently ({sorted(names)})")
    adapter_dir.mkdir(parents=True, exist_ok=True)
    engine = VllmEngine(
        base_id=record.id,
        tokenizer=load_tokenizer(folder),
        servers=servers,
        served_name=names.pop(),
        adapter_dir=adapter_dir,
        rank_max=rank_max,
        batch_max=batch_max,
        queue_max=queue_max,
        adapters_max=adapters_max,
        zero_adapter=write_zero_adapter(adapter_dir, folder, record.id),
        dir_bytes_max=dir_bytes_max,
    )
    for url in down:
        engine.pause(url)
    engine.watch_health()
    return engine


def check_served(server: VllmServer, base_id: str, folder: Path) -> ServedModel:
    """The server's entry for base `base_id` (served under that name, or from `folder`), its
    weights checked against Viz's cached copy where the server's folder is readable here.

    Raises:
        InvalidInput: the server serves another model, or other weights under that name.
    """
    served = [model for model in server.served() if model.parent is None]  # bases, no LoRAs
    base = next((m for m in served if m.name == base_id or Path(m.root) == folder), None)
    if base is None:
        raise InvalidInput(
            f"vLLM server {server.url} serves {', '.join(m.name for m in served) or 'nothing'}, "
            f"not base {base_id}: start it with --model {folder} --served-model-name {base_id}"
        )
    ours, theirs = _weights_sha256(folder), _weights_sha256(Path(base.root))
    if theirs is not None and ours is not None and theirs != ours:
        raise InvalidInput(
            f"vLLM server {server.url} serves {base.root} (weights sha256 {theirs[:12]}...) but "
            f"base {base_id} is {folder} (sha256 {ours[:12]}...): serve Viz's copy of the base"
        )
    return base


def _weights_sha256(folder: Path) -> str | None:
    """The weights' sha256 from a Viz model cache's manifest; None where there is none."""
    try:
        manifest = json.loads((folder / "viz-cache.json").read_text())
        return str(manifest["files"]["model.safetensors"]["sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
