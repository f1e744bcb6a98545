"""Benchmark: loading and decoding the default base model on the CPU, per precision variant.

Measures, in one process, and prints ratios against a baseline measured in the same run (no
absolute time is asserted; the figures depend on the machine):

1. load time: the GGUF through transformers (`from_pretrained(dir, gguf_file=...)`, what a first
   use costs) against the cached safetensors folder (`load_folder(folder, "fp32")` + tokenizer),
   and the one-off cache conversion (`ensure_cached`, first call);
2. decode tokens/s of fp32, bf16 and nf4 with greedy generation through `generate_text`, after a
   warm-up, over a few prompts, plus prefill tokens/s on a ~300-token prompt;
3. weight bytes of each variant, measured (`measured_bytes`) and estimated (`estimate_memory`),
   and the on-disk bytes of the GGUF against the cached safetensors.

Expectations, written before measuring (SmolLM2-135M-Instruct: 134.5M parameters, 30 layers,
hidden 576, tied embeddings; 2 CPU cores with AVX-512 BF16):

- Load. The GGUF is Q4_1: transformers dequantises ~270 tensors in numpy and builds the model,
  ~10-20 s. The cache is one ~540 MB fp32 safetensors file read by mmap, ~0.3-1 s. So
  `gguf load / cached load` ~ 20-50 x. The conversion adds saving 540 MB and hashing it (~2-3 s)
  to a GGUF load: ~15-25 s, paid once.
- Decode. One token reads every weight once: 540 MB in fp32, 270 MB in bf16. At ~10 GB/s that is
  ~50 ms vs ~27 ms, but on a model this small per-op dispatch overhead (30 layers x ~20 ops, plus
  the tokenizer decode in the stream) is a similar share, so fp32 ~ 15-30 tokens/s and
  `bf16 / fp32` ~ 1.0-1.5 (the CPU has native bf16 dot products; without them bf16 would be
  slower than fp32). NF4 unpacks 4-bit codes in bitsandbytes' CPU gemv on every call, and its
  extra kernels per linear layer add overhead: `nf4 / fp32` ~ 0.3-0.8.
  Prefill of ~300 tokens is compute-bound (~2 x 135M x 300 = 80 GFLOP): fp32 ~ 0.5-1.5 s.
- Bytes (from `viz.models.memory`): bf16 / fp32 = 0.50, nf4 / fp32 = 0.21 (embeddings stay bf16
  and dominate at this size). On disk, Q4_1 is ~0.6 bytes/weight plus a Q6/Q8 embedding table,
  ~98 MB, against ~540 MB of fp32 safetensors: `gguf / safetensors` ~ 0.18.

Outcome (bench/results/generate-cpu.txt and one earlier run, an idle 2-core AMD EPYC with
AVX-512 BF16; ranges are across the two runs):

- Load: right order, larger ratio (60-110 x; the cached fp32 model loads in 0.08-0.11 s, so the
  ratio swings with a few tens of milliseconds). Dequantising is only ~2 s of the GGUF model load;
  most of it is gguf's Python reader walking the metadata (the 49k-token vocabulary and merges),
  once for the config and again for the weights, and once more for the tokenizer.
- Decode: fp32 ~15 tokens/s (~62 ms a token: 540 MB at ~9 GB/s, so bandwidth-bound, not
  overhead-bound) and bf16 / fp32 1.45-1.6 as expected; but nf4 / fp32 was 1.6-2.0, not 0.3-0.8:
  bitsandbytes 0.50 repacks 4-bit weights at the first forward for a native AVX-512 BF16 gemv,
  so NF4 decodes fastest because it reads the fewest bytes. Prefill: fp32 ~0.8 s, bf16 ~2 x
  faster (native bf16 GEMM).
- Bytes: as estimated after loading. After the first forward, bitsandbytes' CPU repacking keeps
  absmax in bf16 (double quantisation undone): +1.6 MiB, nf4 / fp32 0.207 -> 0.210.
- Background load matters a lot here: one busy core elsewhere slowed decoding 3-6 x (two OpenMP
  threads on two shared cores), so every section prints the CPU share other processes used.

Example:

    .venv/bin/python bench/generate.py | tee bench/results/generate-cpu.txt
    .venv/bin/python bench/generate.py --quick          # CI smoke run, about a minute
    .venv/bin/python bench/generate.py --tokens 128 --repeats 3 --home /tmp/viz-bench
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

PRECISIONS = ("fp32", "bf16", "nf4")
DECODE_PROMPTS = (
    "Write a long, detailed story about a lighthouse keeper who finds a message in a bottle. "
    "Describe the island, the weather and every step of the search for its sender.",
    "Explain in detail, step by step, how a bicycle works: the frame, the wheels, the chain, "
    "the gears and the brakes. Give examples for each part.",
    "Describe the water cycle to a curious twelve-year-old, covering evaporation, "
    "condensation, precipitation and collection, with everyday examples of each.",
)
PREFILL_PARAGRAPH = (
    "The old harbour town woke slowly: fishermen mended nets on the quay, gulls argued over "
    "scraps, and the baker opened his shutters to the smell of fresh bread. "
)
PREFILL_TOKENS_TARGET = 300


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def timed(action: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = action()
    return time.perf_counter() - start, result


def best_of(repeats: int, action: Callable[[], Any]) -> tuple[float, Any]:
    """Fastest of `repeats` runs of `action`, and the result of the last run."""
    times = []
    result = None
    for _ in range(repeats):
        result = None  # let the previous result go before loading another copy
        seconds, result = timed(action)
        times.append(seconds)
    return min(times), result


class BackgroundLoad:
    """CPU share used by other processes (and stolen by a hypervisor) since the last `reset`.

    From /proc/stat (all processes) minus this process's own CPU time; a busy machine makes every
    time here slower, so each section prints it beside its figures.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._wall = time.perf_counter()
        self._stat = _proc_stat()
        self._own = _own_cpu_s()

    def describe(self) -> str:
        stat = _proc_stat()
        if stat is None or self._stat is None:
            return "background load: unknown (no /proc/stat)"
        hertz = os.sysconf("SC_CLK_TCK")
        capacity = (time.perf_counter() - self._wall) * (os.cpu_count() or 1)
        busy = (stat[0] - self._stat[0]) / hertz
        steal = (stat[1] - self._stat[1]) / hertz
        other = max(0.0, busy - steal - (_own_cpu_s() - self._own))
        return (
            f"background load: other processes {other / capacity:.0%}, hypervisor steal "
            f"{steal / capacity:.0%} of {os.cpu_count()} cores"
        )


def _proc_stat() -> tuple[int, int] | None:
    """(busy jiffies including steal, steal jiffies) over all CPUs."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(value) for value in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return user + nice + system + irq + softirq + steal, steal


def _own_cpu_s() -> float:
    times = os.times()
    return times.user + times.system


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_flags() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16")
    return " ".join(flag for flag in wanted if flag in flags) or "none of avx2/avx512"


def print_header(args: argparse.Namespace, home: Path) -> None:
    import importlib.util

    import bitsandbytes
    import torch
    import transformers

    kernels = "present" if importlib.util.find_spec("kernels") else "absent"
    before = BackgroundLoad()
    time.sleep(1.0)
    print("# viz generation benchmark (CPU)")
    print(f"date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    print(f"cpu: {cpu_model()} ({os.cpu_count()} logical cores; {cpu_flags()})")
    print(f"torch threads: {torch.get_num_threads()}")
    print(f"torch cpu capability: {torch.backends.cpu.get_cpu_capability()}")
    print(
        f"python {platform.python_version()}, torch {torch.__version__}, "
        f"transformers {transformers.__version__}, bitsandbytes {bitsandbytes.__version__} "
        f"(kernels package {kernels})"
    )
    print(
        f"settings: tokens={args.tokens} nf4-tokens={args.nf4_tokens} repeats={args.repeats} "
        f"prompts={args.prompts} quick={args.quick} home={home}"
    )
    print(f"in the second before starting, {before.describe()}")
    print()


def open_record(home: Path) -> Any:
    from viz.config import DEFAULT_BASE_MODEL
    from viz.models.registry import get_base_model
    from viz.store.database import open_database, session_scope

    engine = open_database(f"sqlite:///{home / 'viz.db'}")
    try:
        with session_scope(engine) as session:
            return get_base_model(session, DEFAULT_BASE_MODEL)
    finally:
        engine.dispose()


# --- 1. load time ---------------------------------------------------------------------------


@dataclass
class LoadTime:
    model_s: float
    tokenizer_s: float

    @property
    def total_s(self) -> float:
        return self.model_s + self.tokenizer_s


@dataclass
class LoadResults:
    convert_s: float | None
    check_s: float
    gguf: LoadTime
    cached: dict[str, LoadTime]
    models: dict[str, tuple[Any, Any]] = field(default_factory=dict)


def bench_loads(record: Any, models_dir: Path, repeats: int) -> LoadResults:
    from viz.models.loading import (
        CACHE_MANIFEST,
        _gguf_source,
        ensure_cached,
        load_folder,
        model_folder,
        quiet_transformers,
    )

    transformers = quiet_transformers()
    folder = model_folder(record, models_dir)
    convert_s = None
    if (folder / CACHE_MANIFEST).is_file():
        progress(f"cache already present in {folder}: conversion not timed")
    else:
        progress("converting the GGUF into the safetensors cache (first use, ~20 s)")
        convert_s, _ = timed(lambda: ensure_cached(record, models_dir))
    check_s, _ = best_of(max(repeats, 3), lambda: ensure_cached(record, models_dir))

    source = _gguf_source(record)
    progress(f"loading the GGUF directly (model, then tokenizer) x{repeats}")
    gguf = LoadTime(
        best_of(
            repeats,
            lambda: transformers.AutoModelForCausalLM.from_pretrained(
                source.parent, gguf_file=source.name
            ),
        )[0],
        best_of(
            repeats,
            lambda: transformers.AutoTokenizer.from_pretrained(
                source.parent, gguf_file=source.name
            ),
        )[0],
    )

    tokenizer_s, tokenizer = best_of(
        repeats, lambda: transformers.AutoTokenizer.from_pretrained(folder)
    )
    cached = {}
    models = {}
    for precision in PRECISIONS:
        progress(f"loading the cached folder in {precision} x{repeats}")
        model_s, model = best_of(repeats, lambda p=precision: load_folder(folder, p))
        cached[precision] = LoadTime(model_s, tokenizer_s)
        models[precision] = (model, tokenizer)
    return LoadResults(convert_s, check_s, gguf, cached, models)


def report_loads(loads: LoadResults, repeats: int) -> None:
    print(f"## 1. load time (best of {repeats}; model + tokenizer)")
    if loads.convert_s is None:
        print("cache conversion (ensure_cached, first call): not timed, cache already present")
    else:
        print(f"cache conversion (ensure_cached, first call): {loads.convert_s:8.2f} s")
    print(f"cache check (ensure_cached, later calls):     {loads.check_s * 1000:8.2f} ms")
    gguf = loads.gguf
    print(
        f"gguf load (from_pretrained gguf_file=...):    {gguf.total_s:8.2f} s "
        f"(model {gguf.model_s:.2f} s + tokenizer {gguf.tokenizer_s:.2f} s)"
    )
    for precision, load in loads.cached.items():
        print(
            f"cached load, {precision:4} (load_folder):          {load.total_s:8.2f} s "
            f"(model {load.model_s:.2f} s + tokenizer {load.tokenizer_s:.2f} s)"
        )
    fp32 = loads.cached["fp32"]
    print(f"gguf load / cached load: {gguf.total_s / fp32.total_s:.1f} x")
    print(f"gguf model / cached model: {gguf.model_s / fp32.model_s:.1f} x")
    print(f"gguf tokenizer / cached tokenizer: {gguf.tokenizer_s / fp32.tokenizer_s:.1f} x")
    if loads.convert_s is not None:
        print(f"conversion / cached load: {loads.convert_s / fp32.total_s:.1f} x")
    for precision in ("bf16", "nf4"):
        ratio = loads.cached[precision].model_s / fp32.model_s
        print(f"cached model load {precision} / fp32: {ratio:.2f}")


# --- 2. decode and prefill ------------------------------------------------------------------


@dataclass
class DecodeRun:
    prompt_tokens: int
    completion_tokens: int
    first_piece_s: float  # prefill + first token
    decode_tokens: int  # tokens generated after the first piece
    decode_s: float
    finish_reason: str | None


@dataclass
class DecodeResults:
    runs: list[DecodeRun]
    prefill_tokens: int
    prefill_s: float
    sample: str

    @property
    def tokens_per_s(self) -> float:
        tokens = sum(run.decode_tokens for run in self.runs)
        seconds = sum(run.decode_s for run in self.runs)
        return tokens / seconds if seconds else float("nan")

    @property
    def per_run_tokens_per_s(self) -> list[float]:
        return [run.decode_tokens / run.decode_s for run in self.runs if run.decode_s]


def decode_once(model: Any, tokenizer: Any, prompt: str, max_tokens: int) -> tuple[DecodeRun, str]:
    from viz.models.generate import GenerationSettings, generate_text

    settings = GenerationSettings(max_tokens=max_tokens, temperature=0.0)
    stream = generate_text(
        model,
        tokenizer,
        [{"role": "user", "content": prompt}],
        settings,
        max_tokens_limit=max(max_tokens, 2048),
    )
    start = time.perf_counter()
    first_at = None
    tokens_at_first = 0
    pieces = []
    for piece in stream:
        if first_at is None:
            first_at = time.perf_counter()
            tokens_at_first = stream.completion_tokens
        pieces.append(piece)
    end = time.perf_counter()
    if first_at is None:
        first_at, tokens_at_first = end, stream.completion_tokens
    run = DecodeRun(
        prompt_tokens=stream.prompt_tokens,
        completion_tokens=stream.completion_tokens,
        first_piece_s=first_at - start,
        decode_tokens=stream.completion_tokens - tokens_at_first,
        decode_s=end - first_at,
        finish_reason=stream.finish_reason,
    )
    return run, "".join(pieces)


def prefill_prompt(tokenizer: Any) -> str:
    from viz.models.generate import chat_prompt_ids

    text = ""
    while True:
        longer = text + PREFILL_PARAGRAPH
        ids = chat_prompt_ids(
            tokenizer, [{"role": "user", "content": longer}], prompt_tokens_max=10**6
        )
        if len(ids) > PREFILL_TOKENS_TARGET:
            return text or longer
        text = longer


def bench_decode(
    models: dict[str, tuple[Any, Any]],
    tokens: dict[str, int],
    prompts: Sequence[str],
    repeats: int,
) -> dict[str, DecodeResults]:
    """Decode and prefill runs, interleaved across variants so background load spreads evenly."""
    for precision, (model, tokenizer) in models.items():
        progress(f"warming up {precision}")
        decode_once(model, tokenizer, prompts[0], min(8, tokens[precision]))
    runs: dict[str, list[DecodeRun]] = {precision: [] for precision in models}
    samples: dict[str, str] = {}
    for repeat in range(repeats):
        for precision, (model, tokenizer) in models.items():
            progress(
                f"decoding in {precision} (round {repeat + 1}/{repeats}): {len(prompts)} "
                f"prompt(s) x {tokens[precision]} tokens"
            )
            for index, prompt in enumerate(prompts):
                run, text = decode_once(model, tokenizer, prompt, tokens[precision])
                runs[precision].append(run)
                if index == 0:
                    samples[precision] = text
    prefill: dict[str, list[DecodeRun]] = {precision: [] for precision in models}
    for repeat in range(repeats):
        progress(f"prefill, all variants (round {repeat + 1}/{repeats})")
        for precision, (model, tokenizer) in models.items():
            long_prompt = prefill_prompt(tokenizer)
            prefill[precision].append(decode_once(model, tokenizer, long_prompt, 1)[0])
    return {
        precision: DecodeResults(
            runs[precision],
            prefill[precision][0].prompt_tokens,
            min(run.first_piece_s for run in prefill[precision]),
            samples[precision],
        )
        for precision in models
    }


def report_decode(results: dict[str, DecodeResults], repeats: int, prompts: int) -> None:
    print(
        f"## 2. decode (greedy, generate_text, after a warm-up; {prompts} prompt(s) x {repeats}; "
        "tokens/s = tokens after the first piece / time after the first piece)"
    )
    for precision, result in results.items():
        generated = [run.completion_tokens for run in result.runs]
        finishes = sorted({str(run.finish_reason) for run in result.runs})
        per_run = result.per_run_tokens_per_s
        spread = (
            f"runs {min(per_run):.1f}-{max(per_run):.1f}, median {statistics.median(per_run):.1f}"
            if per_run
            else "no runs"
        )
        print(
            f"{precision:4} decode: {result.tokens_per_s:7.2f} tokens/s ({spread}; "
            f"generated {generated} tokens, finish {'/'.join(finishes)})"
        )
    fp32 = results["fp32"].tokens_per_s
    for precision in ("bf16", "nf4"):
        if precision in results:
            print(
                f"decode tokens/s {precision} / fp32: {results[precision].tokens_per_s / fp32:.2f}"
            )
    print()
    print(f"## 2b. prefill (best of {repeats}; prompt + first token through generate_text)")
    for precision, result in results.items():
        rate = result.prefill_tokens / result.prefill_s
        print(
            f"{precision:4} prefill: {result.prefill_s:6.3f} s for {result.prefill_tokens} prompt "
            f"tokens ({rate:7.1f} tokens/s)"
        )
    fp32_prefill = results["fp32"].prefill_s
    for precision in ("bf16", "nf4"):
        if precision in results:
            ratio = fp32_prefill / results[precision].prefill_s
            print(f"prefill tokens/s {precision} / fp32: {ratio:.2f}")
    print()
    print("## 2c. first answer per variant (greedy; a sanity check that the weights are right)")
    for precision, result in results.items():
        snippet = " ".join(result.sample.split())[:160]
        print(f"{precision:4}: {snippet!r}")


# --- 3. bytes -------------------------------------------------------------------------------


def measure_bytes(models: dict[str, tuple[Any, Any]]) -> dict[str, int]:
    from viz.models.memory import measured_bytes

    return {precision: measured_bytes(model) for precision, (model, _) in models.items()}


def report_bytes(
    models: dict[str, tuple[Any, Any]], after_load: dict[str, int], source: Path, folder: Path
) -> None:
    """Bytes right after loading and again after decoding: bitsandbytes repacks 4-bit weights
    for its CPU kernel at the first forward, storing absmax in bf16 (double quantisation undone).
    """
    from viz.models.memory import estimate_memory, parameter_split

    linear, other = parameter_split(models["fp32"][0].config)
    estimated = estimate_memory(linear, other)
    after_decode = measure_bytes(models)
    print("## 3. weight bytes (parameters + buffers + 4-bit quantisation state)")
    print(f"parameter split: {linear / 1e6:.1f}M in linear layers, {other / 1e6:.1f}M other")
    for precision in PRECISIONS:
        print(
            f"{precision:4}: estimated {estimated[precision] / 2**20:6.1f} MiB, measured after "
            f"load {after_load[precision] / 2**20:6.1f} MiB "
            f"(/ estimated {after_load[precision] / estimated[precision]:.3f}), after decoding "
            f"{after_decode[precision] / 2**20:6.1f} MiB "
            f"(/ estimated {after_decode[precision] / estimated[precision]:.3f})"
        )
    for precision in ("bf16", "nf4"):
        print(
            f"{precision} / fp32: estimated {estimated[precision] / estimated['fp32']:.3f}, "
            f"measured after load {after_load[precision] / after_load['fp32']:.3f}, "
            f"after decoding {after_decode[precision] / after_decode['fp32']:.3f}"
        )
    gguf_bytes = source.stat().st_size
    safetensors_bytes = sum(path.stat().st_size for path in folder.glob("*.safetensors"))
    folder_bytes = sum(path.stat().st_size for path in folder.iterdir() if path.is_file())
    print(f"on disk: gguf {gguf_bytes / 2**20:.1f} MiB ({source.name})")
    print(
        f"on disk: cached safetensors {safetensors_bytes / 2**20:.1f} MiB "
        f"(whole cache folder {folder_bytes / 2**20:.1f} MiB)"
    )
    print(f"gguf / cached safetensors: {gguf_bytes / safetensors_bytes:.3f}")
    print()


# --- main -----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Time loading (GGUF vs cached safetensors) and CPU decoding (fp32 / bf16 / nf4) of "
            "the default base model, and compare weight bytes. Prints ratios; asserts nothing."
        ),
        epilog=(
            "example: .venv/bin/python bench/generate.py | tee bench/results/generate-cpu.txt\n"
            "         .venv/bin/python bench/generate.py --quick   # CI smoke run"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--tokens", type=int, default=None, help="new tokens per decode run (default 64, quick 16)"
    )
    parser.add_argument(
        "--nf4-tokens",
        type=int,
        default=None,
        help="new tokens per nf4 decode run (default: --tokens; lower it where nf4 decodes slowly)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="repeats of each load and decode measurement (default 2, quick 1)",
    )
    parser.add_argument(
        "--prompts",
        type=int,
        default=None,
        choices=range(1, len(DECODE_PROMPTS) + 1),
        metavar=f"1-{len(DECODE_PROMPTS)}",
        help="decode prompts per repeat (default 2, quick 1)",
    )
    parser.add_argument(
        "--home",
        type=Path,
        default=None,
        help="VIZ_HOME-like folder for the database and model cache (default: a temporary "
        "folder, deleted afterwards, so the cache conversion is timed)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's choice, one per core)",
    )
    parser.add_argument("--quick", action="store_true", help="fewer tokens and repeats (CI)")
    args = parser.parse_args(argv)
    args.tokens = args.tokens or (16 if args.quick else 64)
    args.nf4_tokens = args.nf4_tokens or args.tokens
    args.repeats = args.repeats or (1 if args.quick else 2)
    args.prompts = args.prompts or (1 if args.quick else 2)
    if min(args.tokens, args.nf4_tokens, args.repeats, args.threads or 1) < 1:
        parser.error("--tokens, --nf4-tokens, --repeats and --threads must be at least 1")
    return args


def run(args: argparse.Namespace, home: Path) -> None:
    import torch

    from viz.models.loading import _gguf_source, model_folder

    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    print_header(args, home)
    record = open_record(home)
    models_dir = home / "models"

    background = BackgroundLoad()
    loads = bench_loads(record, models_dir, args.repeats)
    report_loads(loads, args.repeats)
    print(f"during section 1, {background.describe()}")
    print()

    prompts = DECODE_PROMPTS[: args.prompts]
    tokens = {p: args.nf4_tokens if p == "nf4" else args.tokens for p in PRECISIONS}
    bytes_after_load = measure_bytes(loads.models)
    background.reset()
    results = bench_decode(loads.models, tokens, prompts, args.repeats)
    report_decode(results, args.repeats, len(prompts))
    print(f"during section 2, {background.describe()}")
    print()

    progress("measuring bytes")
    report_bytes(
        loads.models, bytes_after_load, _gguf_source(record), model_folder(record, models_dir)
    )
    print(f"total benchmark time: {time.perf_counter() - started:.0f} s")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.home is not None:
        args.home.mkdir(parents=True, exist_ok=True)
        run(args, args.home.resolve())
    else:
        with tempfile.TemporaryDirectory(prefix="viz-bench-") as temporary:
            run(args, Path(temporary))
    progress("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
