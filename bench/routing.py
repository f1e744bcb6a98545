"""Benchmark: the recommender's cost model against what the default model really takes here.

Measures, in one process, and prints ratios (estimate / measured; 1.00 is a perfect model):

1. weight bytes per precision: `viz.routing.cost` (from the architecture) against
   `measured_bytes` of the model loaded in fp32, bf16 and nf4;
2. KV cache bytes for a 512-token context: the formula against the cache a real forward pass
   allocates (fp32 and bf16);
3. decode seconds per token: the calibration's prediction (`estimate_speed` on this machine)
   against a fresh measurement, for 0 and 3 adapters (rank-8 LoRA on every linear layer through
   Viz's multi-LoRA hooks, as `viz serve` applies a chain), and the same prediction from the
   *uncalibrated* defaults;
4. recommend() latency over 50 queries on a three-level hierarchy (after the first call), against
   the bare query embedding it starts with.

Usage: python bench/routing.py [--home .viz-bench]   (calibrates into HOME if not yet done)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from viz.config import Settings  # noqa: E402
from viz.models.loading import ensure_cached, load_model  # noqa: E402
from viz.models.memory import measured_bytes, parameter_split  # noqa: E402
from viz.models.registry import BUILTIN_BASES, builtin_record  # noqa: E402
from viz.routing.cost import footprint_bytes, kv_cache_bytes  # noqa: E402
from viz.routing.hardware import detect_hardware  # noqa: E402
from viz.routing.speed import estimate_speed, load_calibration  # noqa: E402
from viz.serving.engines.builtin.calibrate import (  # noqa: E402
    calibrate,
    random_adapter,
    seconds_per_token,
)

QUERIES = [
    "How is BLEU computed for the translation model?",
    "Which datasets do they use for reading comprehension?",
    "How do they detect sarcasm in tweets?",
    "What dialogue state tracker do they compare with?",
    "How large is the vocabulary?",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=Path(".viz-bench"))
    args = parser.parse_args()
    settings = Settings(home=args.home)
    record = builtin_record(BUILTIN_BASES["smollm2-135m-instruct"])
    folder = ensure_cached(record, settings.models_dir)
    calibration = load_calibration(settings.home) or calibrate(
        record, settings.models_dir, settings.home, progress=lambda t: print(f"  calibrating: {t}")
    )
    here = detect_hardware()
    print("# viz routing benchmark (CPU): the cost model against measurements")
    print(f"machine: {here.describe()}; copy bandwidth {calibration.bandwidth_gbs:g} GB/s")

    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(folder)
    linear, other = parameter_split(config)
    models = {}
    for precision in ("fp32", "bf16", "nf4"):
        loaded = load_model(record, settings.models_dir, precision=precision)
        models[precision] = loaded.model
        estimated = footprint_bytes(config, linear, other, precision, context_tokens=0).weights
        measured = measured_bytes(loaded.model)
        print(
            f"weights {precision}: estimated {estimated / 1e6:.1f} MB, measured "
            f"{measured / 1e6:.1f} MB, ratio {estimated / measured:.3f}"
        )
    for precision in ("fp32", "bf16"):
        ids = torch.randint(100, 1000, (1, 512))
        with torch.inference_mode():
            cache = models[precision](ids, use_cache=True).cache
        allocated = sum(
            layer.keys.numel() * layer.keys.element_size()
            + layer.values.numel() * layer.values.element_size()
            for layer in cache.layers
        )
        formula = kv_cache_bytes(config, 512, precision)
        print(f"kv cache {precision} (512 tokens): formula / allocated {formula / allocated:.3f}")

    from viz.serving.engines.builtin import LoraBatch, install_hooks

    for precision in ("fp32", "bf16", "nf4"):
        model = models[precision]
        weights = measured_bytes(model)
        current: list[LoraBatch | None] = [None]
        handles = install_hooks(model, current)
        for adapters in (0, 3):
            mix = [(random_adapter(model, i), 1.0) for i in range(adapters)]
            current[0] = LoraBatch.for_rows([mix]) if mix else None
            measured_s = seconds_per_token(model)
            predicted = estimate_speed(here, precision, weights, adapters, calibration)
            default = estimate_speed(here, precision, weights, adapters, None)
            print(
                f"decode {precision} + {adapters} adapters: measured {1 / measured_s:.1f} tok/s; "
                f"predicted / measured s/token: calibrated "
                f"{predicted.seconds_per_token / measured_s:.2f}, uncalibrated "
                f"{default.seconds_per_token / measured_s:.2f}"
            )
        current[0] = None
        for handle in handles:
            handle.remove()
    _recommend_latency(settings)


def _recommend_latency(settings: Settings) -> None:
    routing_home = Path(".viz-routing")
    if not (routing_home / "viz.db").exists():
        print(
            "recommend latency: skipped (build the hierarchy: viz --home .viz-routing eval routing)"
        )
        return
    from viz.api import load_embedder_cached, recommend_route
    from viz.routing.hardware import parse_hardware
    from viz.routing.options import RouteRequest
    from viz.store import open_database, session_scope

    routing = Settings(home=routing_home)
    database = open_database(routing.database_url_resolved)
    embedder = load_embedder_cached()
    hardware = parse_hardware("laptop-16gb")
    with session_scope(database) as session:
        recommend_route(session, routing, RouteRequest(QUERIES[0], hardware))  # warm-up
        total, embed = [], []
        for i in range(50):
            query = QUERIES[i % len(QUERIES)]
            start = time.perf_counter()
            embedder.encode([query])
            embed.append(time.perf_counter() - start)
            start = time.perf_counter()
            recommend_route(session, routing, RouteRequest(query, hardware))
            total.append(time.perf_counter() - start)
    p50, p50_embed = statistics.median(total), statistics.median(embed)
    print(
        f"recommend: p50 {p50 * 1000:.1f} ms per query (p90 "
        f"{sorted(total)[44] * 1000:.1f} ms); query embedding alone p50 {p50_embed * 1000:.1f} ms; "
        f"ratio {p50 / p50_embed:.2f}"
    )
    database.dispose()


if __name__ == "__main__":
    main()
