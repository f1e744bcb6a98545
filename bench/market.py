"""Marketplace benchmark: screening time by stage, catalogue search latency, DB-backed log.

    python bench/market.py              # ~1-2 min on 2 CPU cores
    python bench/market.py --adapters 300 --entries 2000

Back of the envelope, before measuring (default model, 2 cores):
- screening an r=16 adapter on all linear layers (~20 MB): file/header/config checks are
  milliseconds; shapes need a meta-device model (~0.1 s once transformers is imported); values
  and the update sketch multiply 210 small matrices (~0.5 s); the canary runs 23 short forward
  passes twice (base and adapted) of a 135M model: ~5-15 s, so the canary dominates.
- search over 1,000 adapters: one indexed SQL query plus ORM loading: ~10-50 ms; 10x the
  catalogue should cost well under 10x the time for filtered queries.
- the DB log: an append is one insert plus a max(index) lookup on the primary key: ~1 ms.
  `prove_entry` rebuilds the tree from every leaf hash (O(n)), unlike the in-memory tree of
  bench/log.py, so expect proof time to grow linearly with the log here.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from viz.accounts import create_account
from viz.config import Settings
from viz.log.store import append_entry, prove_entry
from viz.market.catalogue import PublishRequest, publish_adapter, search_adapters
from viz.models import get_base_model
from viz.models.loading import ensure_cached
from viz.store import open_database, session_scope
from viz.store.schema import Adapter, AdapterTag, AdapterVersion

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="example: python bench/market.py --adapters 1000",
    )
    parser.add_argument("--adapters", type=int, default=1000)
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--rank", type=int, default=16)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="viz-bench-market-"))
    try:
        settings = Settings(home=home)
        engine = open_database(settings.database_url_resolved)
        models_dir = REPO / ".viz" / "models"
        with session_scope(engine) as session:
            creator = create_account(session, "bench")
            base = get_base_model(session, settings.default_base_model)
        folder = ensure_cached(base, models_dir)
        print("# viz marketplace benchmark (CPU)")
        screening(engine, settings, models_dir, folder, creator.id, args.rank, home)
        search(engine, args.adapters)
        log(engine, settings, args.entries)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def screening(engine, settings, models_dir, base_folder, owner_id, rank, home) -> None:  # type: ignore[no-untyped-def]
    adapter = make_adapter(base_folder, home / "upload", rank)
    for attempt, version in enumerate(("1.0.0", "1.0.1")):
        request = PublishRequest(
            name="bench-adapter",
            version=version,
            licence="MIT",
            base_id=settings.default_base_model,
            price_in_micro=1,
            price_out_micro=2,
        )
        with session_scope(engine) as session:
            from viz.store.schema import Account

            owner = session.get(Account, owner_id)
            started = time.perf_counter()
            _, report = publish_adapter(
                session, settings.blobs_dir, models_dir, adapter, request, owner=owner
            )
            total = time.perf_counter() - started
        label = "first (cold)" if attempt == 0 else "second (warm)"
        print(
            f"\n## screening an r={rank} adapter on every linear layer, {label}: {total:.2f} s "
            f"-> {report.status}"
        )
        for check in report.checks:
            print(f"  {check.stage:10} {check.seconds:7.3f} s  {check.seconds / total:5.1%}")


def search(engine, adapters: int) -> None:  # type: ignore[no-untyped-def]
    print("\n## search latency (median of 20 queries)")
    timings = {}
    for size in (adapters // 10, adapters):
        fill_catalogue(engine, size)
        with session_scope(engine) as session:
            queries = {
                "text": lambda: search_adapters(session, text="topic-7"),
                "tag + price": lambda: search_adapters(
                    session, tags=("tag-3",), price_out_max_micro=500
                ),
                "everything": lambda: search_adapters(session, limit=100),
            }
            for name, query in queries.items():
                samples = []
                for _ in range(20):
                    started = time.perf_counter()
                    query()
                    samples.append(time.perf_counter() - started)
                timings[(name, size)] = sorted(samples)[len(samples) // 2]
    small, large = adapters // 10, adapters
    for name in ("text", "tag + price", "everything"):
        print(
            f"  {name:12} {small:6} adapters {timings[(name, small)] * 1e3:7.2f} ms   "
            f"{large:6} adapters {timings[(name, large)] * 1e3:7.2f} ms   "
            f"ratio {timings[(name, large)] / timings[(name, small)]:.2f}x for "
            f"{large / small:.0f}x adapters"
        )


def fill_catalogue(engine, size: int) -> None:  # type: ignore[no-untyped-def]
    with session_scope(engine) as session:
        template = session.query(AdapterVersion).first()
        existing = session.query(Adapter).count()
        for number in range(existing, size):
            adapter = Adapter(
                name=f"adapter-{number:05d}",
                owner_id=template.adapter.owner_id,
                base_id=template.adapter.base_id,
                visibility="public",
                description=f"an adapter about topic-{number % 50}",
                tags=[AdapterTag(tag=f"tag-{number % 20}")],
            )
            session.add(adapter)
            session.add(
                AdapterVersion(
                    adapter=adapter,
                    version="1.0.0",
                    licence="MIT",
                    price_in_micro=number % 1000,
                    price_out_micro=number % 1000,
                    status="approved",
                    weights_sha256=template.weights_sha256,
                    config_json=template.config_json,
                    manifest_json="{}",
                    card=f"card of adapter {number}",
                    rank=template.rank,
                    size_bytes=template.size_bytes,
                    update_norm=template.update_norm,
                    sketch=template.sketch,
                    screening_json=template.screening_json,
                )
            )


def log(engine, settings, entries: int) -> None:  # type: ignore[no-untyped-def]
    print("\n## database log (SQLite): append and prove")
    results = {}
    done = 0
    for size in (entries // 10, entries):
        with session_scope(engine) as session:
            started = time.perf_counter()
            for number in range(done, size):
                append_entry(session, "bench", {"n": number})
            append_time = (time.perf_counter() - started) / max(1, size - done)
            done = size
        with session_scope(engine) as session:
            started = time.perf_counter()
            proof = prove_entry(session, size // 2, settings.log_key_path)
            prove_time = time.perf_counter() - started
        results[size] = (append_time, prove_time, len(proof["proof"]))
        print(
            f"  {size:7} entries: append {append_time * 1e3:.3f} ms/entry, prove "
            f"{prove_time * 1e3:.1f} ms ({len(proof['proof'])} hashes)"
        )
    small, large = entries // 10, entries
    print(
        f"  prove {large} / {small} entries: {results[large][1] / results[small][1]:.2f}x "
        "(O(n): the tree is rebuilt from every leaf hash per proof)"
    )


def make_adapter(base_folder: Path, folder: Path, rank: int) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(base_folder)
    model = get_peft_model(
        model, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules="all-linear")
    )
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.001)
    model.save_pretrained(folder)
    return folder


if __name__ == "__main__":
    sys.exit(main())
