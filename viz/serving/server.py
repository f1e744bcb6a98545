"""The gateway's state for one process: engines by (base, precision), resident adapters, its
lease (`viz.serving.leases`: what another replica recovers if it dies), its settler
(`viz.serving.settler`), the retriever and the Prometheus metrics. What replicas must agree on
(idempotent answers, rate limits, requests in flight) is in the database, not here.

Engines are opened on first use through `viz.serving.engines.open_engine` (which imports the
engine's machinery then, never at import time).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from sqlalchemy import Engine as Database

from viz.config import Settings
from viz.models.registry import ensure_builtin_models, get_base_model
from viz.routing.hardware import Hardware, detect_hardware
from viz.serving.engines import (
    AdapterWeights,
    Engine,
    VllmOptions,
    open_adapter_cache,
    open_engine,
)
from viz.serving.grounding import Retriever
from viz.serving.idempotency import evict
from viz.serving.leases import Keeper
from viz.serving.resolve import Resolved
from viz.serving.settler import Settler
from viz.store.blobs import blob_path
from viz.store.database import session_scope

__all__ = ["Server"]


@dataclass
class Server:
    settings: Settings
    database: Database
    engines: dict[tuple[str, str], Engine] = field(default_factory=dict)
    load_lock: threading.Lock = field(default_factory=threading.Lock)  # loading a base
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    retriever: Retriever = field(init=False)
    hardware: Hardware = field(default_factory=detect_hardware)
    adapters: Any = field(init=False)  # the engines' shared resident-adapter cache
    keeper: Keeper = field(init=False)  # this process's lease
    settler: Settler = field(init=False)  # settles delivered requests after their answers

    def __post_init__(self) -> None:
        with session_scope(self.database) as session:  # a fresh home lists and serves them
            ensure_builtin_models(session)
        self.retriever = Retriever(self.settings, self.database)
        self.kind = self.settings.serve_engine
        self.adapters = open_adapter_cache(self.kind, self.settings.adapter_cache_bytes_max)
        self.requests = Counter(
            "viz_requests",
            "Requests by model part and outcome",
            ["adapter", "status"],
            registry=self.registry,
        )
        self.tokens = Counter(
            "viz_tokens", "Tokens by model part", ["adapter", "direction"], registry=self.registry
        )
        self.latency = Histogram(
            "viz_request_seconds",
            "Request latency by model part",
            ["adapter"],
            registry=self.registry,
        )
        self.queue = Gauge("viz_queue_waiting", "Requests waiting", registry=self.registry)
        self.registry.register(_EngineEvents(self))
        settings = self.settings
        self.keeper = Keeper(
            self.database,
            settings,
            janitor=lambda session: evict(
                session,
                ttl_s=settings.idempotency_ttl_s,
                keys_max=settings.idempotency_keys_max,
                bytes_max=settings.idempotency_bytes_max,
            ),
        )
        self.settler = Settler(self.database, fee_bps=settings.platform_fee_bps)

    def engine(self, base_id: str, precision: str) -> Engine:
        """The engine of this base and precision, loading the model on first use (vLLM
        servers serve the base in their own precision: one engine per base)."""
        key = (base_id, precision if self.kind == "builtin" else "served")
        with self.load_lock:
            if key not in self.engines:
                with session_scope(self.database) as session:
                    record = get_base_model(session, base_id)
                settings = self.settings
                self.engines[key] = open_engine(
                    self.kind,
                    record,
                    settings.models_dir,
                    precision=precision,
                    batch_max=settings.serve_batch_max,
                    queue_max=settings.serve_queue_max,
                    adapter_cache=self.adapters,
                    vllm=VllmOptions(
                        tuple(settings.vllm_urls),
                        settings.vllm_adapter_dir_resolved,
                        settings.vllm_max_lora_rank,
                        settings.vllm_adapters_max,
                        settings.vllm_adapter_dir_bytes_max,
                    ),
                )
            return self.engines[key]

    def compose(self, resolved: Resolved, engine: Engine) -> Any:
        """The resolved adapters, hot-loaded by `engine` (cached by bytes), checked against it.

        Raises:
            InvalidInput: an adapter adapts modules this base does not have.
            StorageCorrupt: its weights cannot be read.
        """
        blobs = self.settings.blobs_dir
        return engine.compose(
            [
                AdapterWeights(
                    use.version_id,
                    use.label,
                    blob_path(blobs, use.weights_sha256),
                    use.config_json,
                    use.weight,
                )
                for use in resolved.uses
            ]
        )

    def close(self) -> None:
        for engine in self.engines.values():
            engine.close(drain_s=self.settings.serve_drain_s)
        self.settler.close()
        self.retriever.close()
        self.keeper.close()


class _EngineEvents:
    """Prometheus collector: what each engine server did (vLLM servers: requests, errors,
    adapter loads), read from the engines' own counts when /metrics is scraped."""

    def __init__(self, server: Server) -> None:
        self.server = server

    def collect(self) -> Any:
        family = CounterMetricFamily(
            "viz_engine_events",
            "Engine server events (requests, errors, adapter loads)",
            labels=["engine", "server", "event"],
        )
        for engine in list(self.server.engines.values()):
            for (where, event), count in dict(getattr(engine, "counts", {})).items():
                family.add_metric([self.server.kind, where, event], count)
        yield family
