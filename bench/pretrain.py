"""Pretraining benchmark: the largest base that trains compute-optimally within a time budget,
on QASPER-train (CC BY 4.0) plus Viz's general sample (Apache-2.0), through the same recipe as
`viz models pretrain`.

    python bench/pretrain.py                   # one hour of training (the issue's figure)
    python bench/pretrain.py --minutes 10      # shorter: a smaller share of the tokens
    python bench/pretrain.py --size tiny --minutes 2 --papers 40

1. Calibrate: tokens/s of a few training steps of each size on this machine.
2. Choose the largest size whose compute-optimal token count (Chinchilla: about 20 tokens per
   parameter) trains within the budget at that speed; if none does, the smallest.
3. Catalogue the papers in a fresh SQLite home and pretrain it on them for budget x tokens/s
   tokens (at most the corpus's passes limit): tokenizer, training, held-out perplexity on
   papers kept out whole, manifest, verification and registration.
4. Write bench/results/pretrain/: result.json (figures, loss curve, the calibration) and a
   README.md table; print the figures.

Back of the envelope: training costs about 6 x parameters x tokens FLOPs. Two AVX2 cores reach
a few tens of GFLOP/s in fp32 matmuls, i.e. ~1e14 FLOPs an hour: with 20 tokens per parameter
(6 x 20 x N^2 FLOPs) that is N of ~0.9M parameters, so "tiny" (0.25M, with its 2k vocabulary)
trains compute-optimally in an hour and "small" (~5M) does not.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from viz.accounts import create_account  # noqa: E402
from viz.documents import DocumentInput, add_documents  # noqa: E402
from viz.store import open_database, session_scope  # noqa: E402
from viz.training.pretrain import SIZES, PretrainConfig, model_config  # noqa: E402
from viz.training.pretraining import pretrain_from_documents  # noqa: E402

SHARED = REPO.parent / "shared"
TRAIN_PAPERS = SHARED / "data" / "qasper-train" / "papers"
GENERAL_SAMPLE = REPO / "viz" / "training" / "general_sample.txt"
TOKENS_PER_PARAMETER = 20  # Chinchilla's compute-optimal ratio
OUTPUT = REPO / "bench" / "results" / "pretrain"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=60.0, help="Training time budget")
    parser.add_argument("--size", choices=list(SIZES), help="Skip the choice: train this size")
    parser.add_argument("--papers", type=int, default=0, help="Use the first N papers (0: all)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args()
    if not TRAIN_PAPERS.is_dir():
        sys.exit(f"{TRAIN_PAPERS} not found: this bench needs ../shared/data/qasper-train")
    budget_s = args.minutes * 60

    calibration: dict[str, tuple[int, float]] = {}
    for size in [args.size] if args.size else list(SIZES):  # smallest first
        calibration[size] = parameters, speed = calibrate(size, args.batch_size)
        if TOKENS_PER_PARAMETER * parameters > 10 * budget_s * speed:
            break  # far beyond the budget: the larger sizes are not measured
    print("calibration (this machine, fp32/bf16 as native):")
    for size, (parameters, speed) in calibration.items():
        optimal = TOKENS_PER_PARAMETER * parameters
        print(
            f"  {size:6} {parameters / 1e6:8.2f}M parameters  {speed:9.0f} tokens/s  "
            f"compute-optimal {optimal / 1e6:8.1f}M tokens = {optimal / speed / 3600:8.2f} h"
        )
    size = args.size or choose(calibration, budget_s)
    parameters, speed = calibration[size]
    tokens = int(budget_s * speed)
    print(f"chosen: {size} ({parameters / 1e6:.2f}M parameters), {tokens:,} tokens planned")

    with tempfile.TemporaryDirectory(prefix="viz-bench-pretrain-") as scratch:
        home = Path(scratch)
        engine = open_database(f"sqlite:///{home}/viz.db")
        corpus_bytes = catalogue(engine, home / "blobs", args.papers)
        config = PretrainConfig(size=size, tokens=tokens, batch_size=args.batch_size)
        began = time.monotonic()
        done = pretrain_from_documents(
            engine,
            name=f"bench-{size}",
            account="bench",
            config=config,
            blobs_dir=home / "blobs",
            models_dir=home / "models",
            owners=["bench"],
            progress=Reporter(),
            say=print,
        )
        wall = time.monotonic() - began
    assert done is not None  # one process: the main one
    record(done.manifest, calibration, size, budget_s, wall, corpus_bytes, args.output)


def calibrate(size: str, batch_size: int, steps: int = 3) -> tuple[int, float]:
    """(parameters, training tokens/s) of `size` on random tokens, after one warm-up step."""
    import torch
    from transformers import LlamaForCausalLM

    from viz.models.precision import native_bf16

    shape = SIZES[size]
    model = LlamaForCausalLM(model_config(size, shape["vocab"]))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batch = max(1, min(batch_size, 2048 // shape["context"]))  # the base size: one window
    ids = torch.randint(0, shape["vocab"], (batch, shape["context"]))
    bf16 = native_bf16()
    elapsed = 0.0
    for step in range(steps + 1):
        started = time.perf_counter()
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step:
            elapsed += time.perf_counter() - started
    return sum(p.numel() for p in model.parameters()), steps * ids.numel() / elapsed


def choose(calibration: dict[str, tuple[int, float]], budget_s: float) -> str:
    """The largest size whose compute-optimal tokens train within the budget, else the smallest."""
    fitting = [
        size
        for size, (parameters, speed) in calibration.items()
        if TOKENS_PER_PARAMETER * parameters <= budget_s * speed
    ]
    return (
        max(fitting, key=lambda s: calibration[s][0])
        if fitting
        else min(calibration, key=lambda s: calibration[s][0])
    )


def catalogue(engine, blobs: Path, papers: int) -> int:  # type: ignore[no-untyped-def]
    """QASPER-train papers (CC BY 4.0) and the general sample (Apache-2.0) for account bench."""
    paths = sorted(TRAIN_PAPERS.glob("*.txt"))[: papers or None]
    with session_scope(engine) as session:
        owner = create_account(session, "bench")
        limits = {"document_bytes_max": 10**8, "documents_max": len(paths) + 1}
        add_documents(
            session,
            blobs,
            owner,
            paths,
            DocumentInput("CC-BY-4.0", attribution="Dasigi et al. 2021, QASPER (AI2), CC BY 4.0"),
            **limits,
        )
        add_documents(
            session,
            blobs,
            owner,
            [GENERAL_SAMPLE],
            DocumentInput("Apache-2.0", attribution="The Viz project"),
            **limits,
        )
    return sum(p.stat().st_size for p in [*paths, GENERAL_SAMPLE])


class Reporter:
    """One progress line every 30 s: step, loss, tokens/s, ETA."""

    def __init__(self) -> None:
        self.first: tuple[int, float] | None = None
        self.last = 0.0

    def __call__(self, step: int, steps: int, loss: float, speed: float) -> None:
        now = time.monotonic()
        if self.first is None:
            self.first = (step, now)
        if now - self.last < 30 and step < steps:
            return
        self.last = now
        done, began = step - self.first[0], self.first[1]
        eta = (now - began) / done * (steps - step) if done else math.nan
        print(
            f"  step {step}/{steps}  loss {loss:.3f}  {speed:.0f} tokens/s  ETA {eta / 60:.1f} min",
            flush=True,
        )


def record(manifest, calibration, size, budget_s, wall, corpus_bytes, output: Path) -> None:  # type: ignore[no-untyped-def]
    m, t = manifest["metrics"], manifest["training"]
    result = {
        "command": "python " + " ".join(sys.argv),
        "size": size,
        "parameters": manifest["parameters"],
        "budget_s": budget_s,
        "wall_s": round(wall, 1),
        "corpus_bytes": corpus_bytes,
        "documents": len(manifest["documents"]),
        "held_out_documents": sum(d["split"] == "held_out" for d in manifest["documents"]),
        "train_tokens_per_epoch": sum(
            d["tokens"] for d in manifest["documents"] if d["split"] == "train"
        ),
        "tokens_seen": t["tokens_seen"],
        "epochs": t["epochs"],
        "precision": t["precision"],
        "flops": 6 * manifest["parameters"] * t["tokens_seen"],
        **m,
        "calibration": {
            s: {"parameters": p, "tokens_per_second": round(v)} for s, (p, v) in calibration.items()
        },
        "hardware": manifest["run"]["hardware"],
        "losses": manifest["losses"],
    }
    output.mkdir(parents=True, exist_ok=True)
    (output / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    curve = manifest["losses"]
    every = max(1, len(curve) // 20)
    rows = "\n".join(f"| {i + 1} | {curve[i]:.3f} |" for i in range(0, len(curve), every))
    gflops = result["flops"] / max(1e-9, m["seconds"]) / 1e9
    before, after = m["held_out_perplexity_initial"], m["held_out_perplexity"]
    figures = [
        ("size", f"{size} ({result['parameters']:,} parameters)"),
        ("corpus", f"{result['documents']} documents ({corpus_bytes / 2**20:.1f} MiB)"),
        ("kept out (held-out perplexity)", f"{result['held_out_documents']} documents"),
        ("training tokens per epoch", f"{result['train_tokens_per_epoch']:,}"),
        ("tokens seen", f"{result['tokens_seen']:,} ({result['epochs']} epochs)"),
        ("training time", f"{m['seconds']:.0f} s (budget {budget_s:.0f} s)"),
        ("wall time, with tokenizer and registration", f"{wall:.0f} s"),
        ("tokens/s", f"{m['tokens_per_second']:.0f}"),
        ("compute (6 x N x D)", f"{result['flops']:.3g} FLOPs, {gflops:.1f} GFLOP/s"),
        ("held-out perplexity", f"{before} -> {after} (x{after / before:.4f})"),
    ]
    table = "\n".join(f"| {name} | {value} |" for name, value in figures)
    sizes = "\n".join(
        f"- {s}: {c['parameters']:,} parameters, {c['tokens_per_second']:,} tokens/s"
        for s, c in result["calibration"].items()
    )
    hardware = result["hardware"]
    summary = f"""# Pretraining from scratch on openly licensed text (`bench/pretrain.py`)

`{result["command"]}` on {hardware["cpu"]}, {hardware["cpu_threads"]} threads,
{result["precision"]}.

| figure | value |
| --- | --- |
{table}

Calibration (training tokens/s per size on this machine):
{sizes}

Loss curve (every {every} steps):

| step | loss |
| --- | --- |
{rows}
"""
    (output / "README.md").write_text(summary)
    print(summary)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
