"""The vLLM engine: Viz's gateway in front of vLLM OpenAI servers serving the same base.

What stays in Viz: the composition (a weighted sum of adapters, or a child with its parents,
becomes one exact rank-stacked LoRA, `viz.serving.engines.stacking`), the prompt's token ids
(the tokens billed are the tokens counted here), placement (rendezvous hashing on the
composition key, so an adapter keeps going to the server that has it loaded), and every count
the ledger settles on (vLLM's usage, reported on every chunk).

    engine = open_vllm(record, models_dir, urls=["http://127.0.0.1:8001"], adapter_dir=...)

Base requests go through a zero adapter: with every LoRA slot of a vLLM batch occupied, a row
without an adapter gets the last slot's delta (vLLM 0.32 on CPU; upstream fixes are open as
vllm-project/vllm PRs #48421 and #49656), and a zero adapter occupies its own slot instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import queue
import shutil
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from viz.errors import InvalidInput, Overloaded, VizError
from viz.models.generate import GenerationSettings
from viz.models.sampling import Scored
from viz.serving.engines import AdapterWeights, EngineLimits, read_events
from viz.serving.engines.lora import load_lora
from viz.serving.engines.stacking import composition_key, write_stacked
from viz.serving.engines.vllm.client import EngineUnavailable, VllmServer

__all__ = ["Stacked", "VllmEngine", "VllmGeneration", "rendezvous"]

ZERO_ADAPTER = "viz-zero"
FAILED_SERVER_PAUSE_S = 10.0  # a server that failed is skipped this long, then tried again
HEALTH_INTERVAL_S = 5.0  # between two rounds of health checks (each bounded by the client)


@dataclass(frozen=True)
class Stacked:
    """A composition ready for vLLM: its key (the LoRA name) and folder; None for the base."""

    key: str
    folder: Path
    rank: int
    labels: tuple[str, ...]


def rendezvous(key: str, servers: Sequence[VllmServer]) -> list[VllmServer]:
    """`servers` ordered by highest random weight for `key`: the same key, the same first
    server, and removing a server moves only the keys that were on it."""
    return sorted(
        servers, key=lambda s: hashlib.sha256(f"{key}|{s.url}".encode()).digest(), reverse=True
    )


@dataclass
class VllmGeneration:
    """One generation on a vLLM server, filled by its request thread, read through `pieces()`."""

    prompt_ids: list[int]
    settings: GenerationSettings
    finish_reason: str | None = None
    error: VizError | None = None
    submitted_at: float = field(default_factory=time.monotonic)
    first_token_at: float | None = None
    finished_at: float | None = None
    server: str | None = None
    scored: list[Scored] = field(default_factory=list)  # with settings.logprobs
    prompt_scored: list[Scored] = field(default_factory=list)  # never: refused in `_body`
    _completion_tokens: int = 0
    _ended_on_token: int = 0  # 1 when vLLM finished on an end-of-turn token (counted in usage)
    _events: queue.Queue[tuple[str, str]] = field(default_factory=queue.Queue)
    _cancelled: threading.Event = field(default_factory=threading.Event)

    @property
    def prompt_tokens(self) -> int:
        return len(self.prompt_ids)

    @property
    def completion_tokens(self) -> int:
        """vLLM counts the end-of-turn token it generated; Viz bills the answer's tokens only
        (as the builtin engine does), so an answer that ended on one counts one less."""
        return max(0, self._completion_tokens - self._ended_on_token)

    def cancel(self) -> None:
        """Stop generating (closes the upstream request); tokens made so far stay counted."""
        self._cancelled.set()

    def pieces(self, timeout_s: float = 600.0) -> Iterator[str]:
        """Text as it is generated; returns when the generation ends, raises its error."""
        return read_events(self._events, timeout_s, self.cancel, lambda: self.error)


class VllmEngine:
    """The `Engine` protocol over one or more vLLM servers serving base `base_id`."""

    def __init__(
        self,
        *,
        base_id: str,
        tokenizer: Any,
        servers: Sequence[VllmServer],
        served_name: str,
        adapter_dir: Path,
        rank_max: int,
        batch_max: int,
        queue_max: int,
        adapters_max: int,
        zero_adapter: Path,
        dir_bytes_max: int,
    ) -> None:
        self.base_id, self.tokenizer, self.servers = base_id, tokenizer, list(servers)
        self.served_name, self.adapter_dir = served_name, adapter_dir
        self.rank_max, self.adapters_max, self.zero_adapter = rank_max, adapters_max, zero_adapter
        # stacked adapters kept on disk: what every server may have loaded, and as many again
        self.folders_max = 2 * adapters_max * max(1, len(servers))
        self.dir_bytes_max = dir_bytes_max
        # the precision is the servers' own (vLLM --dtype, --quantization), not the gateway's
        self._limits = EngineLimits(rank_max, ("served",), batch_max, queue_max)
        self._lock = threading.Lock()
        self._in_flight = 0
        self._closing = False
        self._loaded: dict[str, OrderedDict[str, Path]] = {s.url: OrderedDict() for s in servers}
        self._failed_until: dict[str, float] = {}
        self._stopped = threading.Event()
        self.counts: dict[tuple[str, str], int] = {}  # (server, what) -> count, for /metrics

    @property
    def limits(self) -> EngineLimits:
        return self._limits

    @property
    def waiting(self) -> int:
        return max(0, self._in_flight - self._limits.batch_max)

    @property
    def running(self) -> int:
        return min(self._in_flight, self._limits.batch_max)

    def compose(self, adapters: Sequence[AdapterWeights]) -> Stacked:
        """The adapters as one stacked LoRA written to the adapter directory (once per
        composition); the base alone is the zero adapter.

        Raises:
            InvalidInput: the ranks add up past the servers' LoRA rank limit, or an adapter
                does not fit the base.
            StorageCorrupt: an adapter's weights cannot be read.
        """
        if not adapters:
            return Stacked(ZERO_ADAPTER, self.zero_adapter, 1, ())
        labels = tuple(adapter.label for adapter in adapters)
        ranks = [_rank(adapter) for adapter in adapters]
        if sum(ranks) > self.rank_max:
            named = " + ".join(
                f"{label} r={rank}" for label, rank in zip(labels, ranks, strict=True)
            )
            raise InvalidInput(
                f"the composition stacks to rank {sum(ranks)} ({named}); the vLLM servers take "
                f"LoRA rank {self.rank_max} at most (--max-lora-rank): use fewer adapters"
            )
        key = composition_key([(adapter.version_id, adapter.weight) for adapter in adapters])
        folder = self.adapter_dir / key
        if (folder / "adapter_config.json").is_file():  # written once per composition
            os.utime(folder)  # recently used: the last to be pruned
        else:
            parts = [(_read(adapter), adapter.weight) for adapter in adapters]
            folder = write_stacked(self.adapter_dir, parts, base_id=self.base_id)
            self._prune()
        return Stacked(key, folder, sum(ranks), labels)

    def _prune(self) -> None:
        """Keep at most `folders_max` stacked adapters and `dir_bytes_max` bytes on disk:
        delete the least recently used that no server has loaded (the zero adapter stays)."""
        with self._lock:
            loaded = {name for names in self._loaded.values() for name in names}
        folders = sorted(
            (f.stat().st_mtime_ns, f, _bytes(f))
            for f in self.adapter_dir.glob("viz-*")
            if f.is_dir() and f.name != ZERO_ADAPTER
        )
        count, total = len(folders), sum(size for _, _, size in folders)
        for _, folder, size in folders:
            if count <= self.folders_max and total <= self.dir_bytes_max:
                return
            if folder.name not in loaded:
                shutil.rmtree(folder, ignore_errors=True)
                count, total = count - 1, total - size

    def submit(
        self,
        prompt_ids: list[int],
        settings: GenerationSettings,
        composition: Stacked,
        *,
        choice: int = 0,
    ) -> VllmGeneration:
        """Queue a generation on the composition's server (a thread per request, bounded).

        Raises:
            Overloaded: the engine is shutting down, or batch and queue are full.
        """
        with self._lock:
            if self._closing:
                raise Overloaded("the server is shutting down; retry on another instance")
            if self._in_flight >= self._limits.batch_max + self._limits.queue_max:
                raise Overloaded(
                    f"{self._in_flight} requests are running or waiting (the limit is "
                    f"{self._limits.batch_max + self._limits.queue_max}); retry in a moment"
                )
            self._in_flight += 1
        generation = VllmGeneration(list(prompt_ids), settings)
        body = self._body(prompt_ids, settings, composition, choice)
        threading.Thread(
            target=self._run, args=(generation, body, composition), daemon=True
        ).start()
        return generation

    def watch_health(self, interval_s: float = HEALTH_INTERVAL_S) -> None:
        """Check every server's `/health` every `interval_s` in a thread (each check bounded by
        the client's timeout) and pause those that fail, so their keys move before a request
        finds out; `close` stops it."""

        def watch() -> None:
            while not self._stopped.wait(interval_s):
                for server in self.servers:
                    if self._stopped.is_set():
                        return
                    if not server.healthy():
                        self._count(server.url, "health_failures")
                        self.pause(server.url)

        threading.Thread(target=watch, name="vllm-health", daemon=True).start()

    def close(self, *, drain_s: float = 30.0) -> None:
        """Stop taking requests, wait up to `drain_s` for running ones, then close clients."""
        with self._lock:
            self._closing = True
        self._stopped.set()
        deadline = time.monotonic() + drain_s
        while self._in_flight and time.monotonic() < deadline:
            time.sleep(0.05)
        for server in self.servers:
            server.close()

    def pause(self, url: str) -> None:
        """Skip server `url` for FAILED_SERVER_PAUSE_S (it failed; its keys move meanwhile)."""
        self._failed_until[url] = time.monotonic() + FAILED_SERVER_PAUSE_S

    # --- one request ------------------------------------------------------------------------

    def _body(
        self, prompt_ids: list[int], settings: GenerationSettings, stacked: Stacked, choice: int
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": stacked.key,
            "prompt": list(prompt_ids),
            "max_tokens": settings.max_tokens,
            "temperature": settings.temperature,
            "top_p": settings.top_p,
            "stream_options": {"include_usage": True, "continuous_usage_stats": True},
        }
        if settings.stop:
            body["stop"] = list(settings.stop)
        if settings.seed is not None:
            body["seed"] = settings.seed + choice
        for name in ("presence_penalty", "frequency_penalty", "repetition_penalty"):
            body[name] = getattr(settings, name)
        if settings.logit_bias:
            body["logit_bias"] = {str(token): bias for token, bias in settings.logit_bias}
        if settings.logprobs is not None:
            body["logprobs"] = settings.logprobs
            body["return_tokens_as_token_ids"] = True  # "token_id:N": ids, not lossy strings
        if settings.prompt_logprobs is not None:
            raise InvalidInput(
                "echo with logprobs is not available on the vLLM engine (vLLM does not stream "
                "prompt logprobs); drop logprobs or use a gateway on the builtin engine"
            )
        if settings.json_schema is not None:
            body["structured_outputs"] = {
                "json": json.loads(settings.json_schema),
                "disable_any_whitespace": True,
            }
        return body

    def _run(self, generation: VllmGeneration, body: dict[str, Any], stacked: Stacked) -> None:
        try:
            self._place(generation, body, stacked)
        except VizError as error:
            generation.error = error
            generation.finish_reason = "error"
            generation._events.put(("error", ""))
        else:
            generation._events.put(("end", ""))
        finally:
            generation.finished_at = time.monotonic()
            with self._lock:
                self._in_flight -= 1

    def _place(self, generation: VllmGeneration, body: dict[str, Any], stacked: Stacked) -> None:
        """Run on the composition's first healthy server; before any token, fail over."""
        candidates = self._candidates(stacked.key)
        last: VizError | None = None
        for server in candidates:
            try:
                self._ensure_loaded(server, stacked)
                self._stream(server, generation, body)
                self._count(server.url, "requests")
                return
            except EngineUnavailable as error:
                self._count(server.url, "errors")
                self.pause(server.url)
                if generation.first_token_at is not None:
                    raise  # text was sent: the gateway settles what was sent, no retry
                last = error
        raise last or EngineUnavailable("no vLLM server is configured")

    def _candidates(self, key: str) -> list[VllmServer]:
        now = time.monotonic()
        ordered = rendezvous(key, self.servers)
        healthy = [s for s in ordered if self._failed_until.get(s.url, 0.0) <= now]
        paused = [s for s in ordered if s not in healthy]
        return healthy + paused  # a paused server is still tried when every other failed

    def _stream(self, server: VllmServer, generation: VllmGeneration, body: dict) -> None:
        generation.server = server.url
        for chunk in server.complete(body, generation._cancelled):
            usage = chunk.get("usage") or {}
            if "completion_tokens" in usage:
                generation._completion_tokens = int(usage["completion_tokens"])
            for choice in chunk.get("choices") or []:
                if generation.settings.logprobs is not None:
                    generation.scored.extend(_scored(choice.get("logprobs")))
                text = choice.get("text") or ""
                if text:
                    if generation.first_token_at is None:
                        generation.first_token_at = time.monotonic()
                    generation._events.put(("text", text))
                if choice.get("finish_reason"):
                    generation.finish_reason = _finish(choice["finish_reason"])
                    ended_on_token = choice["finish_reason"] == "stop" and not isinstance(
                        choice.get("stop_reason"), str
                    )
                    generation._ended_on_token = int(ended_on_token)
        if generation._cancelled.is_set():
            generation.finish_reason = "cancelled"
        elif generation.finish_reason is None:
            raise EngineUnavailable(f"vLLM server {server.url} ended the stream without finishing")
        self._count(server.url, "completion_tokens", generation.completion_tokens)

    def _ensure_loaded(self, server: VllmServer, stacked: Stacked) -> None:
        """Load the stacked adapter on `server` if it does not have it; unload the least
        recently used past `adapters_max`."""
        with self._lock:
            loaded = self._loaded[server.url]
            if stacked.key in loaded:
                loaded.move_to_end(stacked.key)
                return
        server.load_adapter(stacked.key, stacked.folder)
        self._count(server.url, "adapter_loads")
        with self._lock:
            loaded[stacked.key] = stacked.folder
            evicted = []
            while len(loaded) > self.adapters_max:
                name, _ = loaded.popitem(last=False)
                if name != ZERO_ADAPTER:
                    evicted.append(name)
                else:
                    loaded[name] = self.zero_adapter
        for name in evicted:
            server.unload_adapter(name)

    def _count(self, server: str, what: str, amount: int = 1) -> None:
        with self._lock:
            self.counts[(server, what)] = self.counts.get((server, what), 0) + amount


def _bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.iterdir() if f.is_file())


def _rank(adapter: AdapterWeights) -> int:
    try:
        return int(json.loads(adapter.config_json)["r"])
    except (ValueError, KeyError, TypeError) as error:
        raise InvalidInput(
            f"{adapter.label}: its adapter config cannot be read ({error})"
        ) from error


def _read(adapter: AdapterWeights) -> Any:
    return load_lora(
        adapter.weights_path,
        adapter.config_json,
        version_id=adapter.version_id,
        label=adapter.label,
    )


def _scored(logprobs: dict[str, Any] | None) -> list[Scored]:
    """A completion chunk's logprobs ("token_id:N" keys, see `_body`) as Viz's entries."""
    if not logprobs:
        return []
    entries = []
    tokens, values = logprobs.get("tokens") or [], logprobs.get("token_logprobs") or []
    tops = logprobs.get("top_logprobs") or [None] * len(tokens)
    for token, value, top in zip(tokens, values, tops, strict=False):
        alternatives = sorted(
            ((_token_id(key), float(lp)) for key, lp in (top or {}).items()),
            key=lambda pair: -pair[1],
        )
        entries.append(Scored(_token_id(token), float(value or 0.0), tuple(alternatives)))
    return entries


def _token_id(token: str) -> int:
    return int(token.rsplit(":", 1)[-1])


def _finish(reason: str) -> str:
    return {"stop": "stop", "length": "length", "abort": "cancelled"}.get(reason, "stop")


def write_zero_adapter(adapter_dir: Path, base_folder: Path, base_id: str) -> Path:
    """A rank-1 LoRA whose delta is zero (B = 0) on every q_proj of the base: what base
    requests run under, so they never share a batch's slots without one of their own."""
    # deferred: torch is heavy, and the gateway imports this module
    import torch
    from safetensors.torch import save_file

    folder = adapter_dir / ZERO_ADAPTER
    if (folder / "adapter_config.json").is_file():
        return folder
    config = json.loads((base_folder / "config.json").read_text())
    hidden, layers = int(config["hidden_size"]), int(config["num_hidden_layers"])
    heads = int(config["num_attention_heads"])
    out = int(config.get("head_dim") or hidden // heads) * heads
    tensors = {}
    for layer in range(layers):
        name = f"base_model.model.model.layers.{layer}.self_attn.q_proj"
        tensors[f"{name}.lora_A.weight"] = torch.zeros(1, hidden)
        tensors[f"{name}.lora_B.weight"] = torch.zeros(out, 1)
    staging = adapter_dir / f".{ZERO_ADAPTER}.partial"
    staging.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(staging / "adapter_model.safetensors"))
    peft = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_id,
        "r": 1,
        "lora_alpha": 1,
        "target_modules": ["q_proj"],
        "lora_dropout": 0.0,
        "bias": "none",
    }
    (staging / "adapter_config.json").write_text(json.dumps(peft, indent=2))
    with contextlib.suppress(OSError):
        staging.rename(folder)
    return folder
