"""Training benchmark: NF4-QLoRA vs bf16-LoRA vs fp32-LoRA on the default base, same data.

    python bench/train.py                # ~4 min on 2 CPU cores
    python bench/train.py --steps 4      # quicker

Each variant trains in its own process (so peak resident memory, ru_maxrss, is its own) on
three QASPER papers, and the parent prints ratios.

Back of the envelope, before measuring (SmolLM2-135M, batch 4 x 128 tokens, 2 cores):
- base bytes: NF4 with double quantisation stores 4 + 8/64 + 32/(64*256) = 4.127 bits per
  quantised weight (QLoRA paper), vs 16 for bf16: 0.258 of bf16 on the linear layers; with the
  bf16 embedding table the whole base is ~0.41 of bf16.
- s/step: QLoRA dequantises every linear weight on every forward and backward pass on the CPU,
  so expect it slower than fp32 LoRA: ~1-2x.
- peak memory: the fp32 base is 513 MiB vs 106 MiB in NF4, but activations, the Python runtime
  and torch dominate at this size: expect a peak ratio of ~0.6-0.8, not 0.2.
- held-out perplexity adapter / base: ~0.7 after a dozen steps at lr 1e-3 (the demo's figure).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAPERS = ["1503.00841.txt", "1601.02403.txt", "1603.01514.txt"]
NF4_BITS_PER_WEIGHT = 4 + 8 / 64 + 32 / (64 * 256)
# variant -> (method, base precision)
VARIANTS = {"lora-fp32": ("lora", "fp32"), "lora-bf16": ("lora", "bf16"), "qlora": ("qlora", "nf4")}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog="example: python bench/train.py --steps 8"
    )
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--sequence-length", type=int, default=128)
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    parser.add_argument("--variant", choices=list(VARIANTS), help=argparse.SUPPRESS)
    parser.add_argument("--home", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(run_variant(args)))
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    home = Path(tempfile.mkdtemp(prefix="viz-bench-train-"))
    try:
        report(args, {variant: child(args, variant, home) for variant in VARIANTS})
    finally:
        shutil.rmtree(home, ignore_errors=True)


def child(args: argparse.Namespace, variant: str, home: Path) -> dict:
    print(f"training {variant} for {args.steps} steps ...", file=sys.stderr, flush=True)
    command = [
        sys.executable,
        __file__,
        "--variant",
        variant,
        "--home",
        str(home / variant),
        "--steps",
        str(args.steps),
        "--batch-size",
        str(args.batch_size),
        "--sequence-length",
        str(args.sequence_length),
        "--shared",
        str(args.shared),
    ]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def run_variant(args: argparse.Namespace) -> dict:
    from transformers import AutoConfig

    from viz.accounts import create_account
    from viz.config import Settings
    from viz.documents import DocumentInput, add_documents
    from viz.models import estimate_memory, get_base_model, parameter_split
    from viz.models.loading import ensure_cached
    from viz.store import open_database, session_scope
    from viz.training import TrainingConfig
    from viz.training.recipe import train_from_documents

    settings = Settings(home=args.home)
    engine = open_database(settings.database_url_resolved)
    papers = [args.shared / "data" / "qasper-dev" / "papers" / name for name in PAPERS]
    with session_scope(engine) as session:
        account = create_account(session, "bench")
        add_documents(
            session,
            settings.blobs_dir,
            account,
            papers,
            DocumentInput("CC-BY-4.0"),
            document_bytes_max=10**8,
            documents_max=10,
        )
        base = get_base_model(session, settings.default_base_model)
    cache = REPO / ".viz" / "models"
    folder = ensure_cached(base, cache)
    method, precision = VARIANTS[args.variant]
    config = TrainingConfig(
        method=method,
        base_precision=precision,
        steps=args.steps,
        batch_size=args.batch_size,
        sequence_length=args.sequence_length,
        overlap=16,
        held_out_fraction=0.25,
        learning_rate=1e-3,
        checkpoint_every=args.steps,
    )
    result = train_from_documents(
        engine,
        name=f"bench-{args.variant}",
        account="bench",
        base=settings.default_base_model,
        config=config,
        blobs_dir=settings.blobs_dir,
        models_dir=cache,
        adapters_dir=settings.adapters_dir,
        owners=["bench"],
        show_progress=False,
    )
    metrics = result.manifest["metrics"]
    estimates = estimate_memory(*parameter_split(AutoConfig.from_pretrained(folder)))
    return {
        "seconds_per_step": result.manifest["run"]["duration_s"] / metrics["steps"],
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "perplexity_base": metrics["held_out_perplexity_base"],
        "perplexity_adapter": metrics["held_out_perplexity_adapter"],
        "general_base": metrics["general_perplexity_base"],
        "general_adapter": metrics["general_perplexity_adapter"],
        "base_bytes": estimates[precision],
        "bf16_bytes": estimates["bf16"],
    }


def report(args: argparse.Namespace, results: dict[str, dict]) -> None:
    qlora = results["qlora"]
    print("# viz training benchmark (CPU): NF4-QLoRA vs bf16-LoRA vs fp32-LoRA, same data")
    print(
        f"steps {args.steps}, batch {args.batch_size} x {args.sequence_length} tokens, "
        f"{os.cpu_count()} CPU cores"
    )
    for name, r in results.items():
        print(
            f"{name:9} {r['seconds_per_step']:.2f} s/step, peak RSS "
            f"{r['peak_rss_bytes'] / 2**20:.0f} MiB, base {r['base_bytes'] / 2**20:.1f} MiB, "
            f"held-out perplexity {r['perplexity_base']:.2f} -> {r['perplexity_adapter']:.2f}, "
            f"general {r['general_base']:.2f} -> {r['general_adapter']:.2f}"
        )
    for baseline in ("lora-bf16", "lora-fp32"):
        other = results[baseline]
        print(
            f"s/step qlora / {baseline}: "
            f"{qlora['seconds_per_step'] / other['seconds_per_step']:.2f}"
        )
        print(
            f"peak RSS qlora / {baseline}: {qlora['peak_rss_bytes'] / other['peak_rss_bytes']:.2f}"
        )
    print(
        f"base bytes nf4+dq / bf16: {qlora['base_bytes'] / qlora['bf16_bytes']:.3f} "
        f"(linear layers: {NF4_BITS_PER_WEIGHT:.3f} bits/param / 16 = "
        f"{NF4_BITS_PER_WEIGHT / 16:.3f})"
    )
    for name, r in results.items():
        print(
            f"held-out perplexity adapter / base ({name}): "
            f"{r['perplexity_adapter'] / r['perplexity_base']:.3f}"
        )


if __name__ == "__main__":
    main()
