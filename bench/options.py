"""Benchmark: what each OpenAI option costs per token in the builtin engine (nothing asserted).

One chat prompt, the default model (fp32), one request at a time; the time per token from the
first token to the last (the prompt's prefill excluded): plain sampling as the baseline, then
logprobs with 20 alternatives, the three penalties with a 300-entry logit bias, a JSON schema
(llguidance) and json_object. Prints ms per token and the ratio to the baseline run in the same
process; writes bench/results/options/report.md.

Example:

    .venv/bin/python bench/options.py --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from viz.models.generate import GenerationSettings, chat_prompt_ids  # noqa: E402
from viz.models.loading import ensure_cached, load_model  # noqa: E402
from viz.models.registry import BUILTIN_BASES, builtin_record  # noqa: E402
from viz.serving.engines.builtin import BuiltinEngine  # noqa: E402

SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 40},
        "country": {"type": "string", "maxLength": 40},
        "landmarks": {"type": "array", "items": {"type": "string", "maxLength": 30}},
    },
    "required": ["city", "country", "landmarks"],
    "additionalProperties": False,
}


def variants(tokens: int) -> dict[str, GenerationSettings]:
    plain = GenerationSettings(max_tokens=tokens)
    return {
        "plain (baseline)": plain,
        "logprobs, 20 alternatives": GenerationSettings(max_tokens=tokens, logprobs=20),
        "penalties + 300 logit_bias": GenerationSettings(
            max_tokens=tokens,
            presence_penalty=0.5,
            frequency_penalty=0.5,
            repetition_penalty=1.2,
            logit_bias=tuple((token, -1.0) for token in range(1000, 1300)),
        ),
        "json_schema (llguidance)": GenerationSettings(
            max_tokens=tokens, json_schema=json.dumps(SCHEMA, sort_keys=True)
        ),
        "json_object (llguidance)": GenerationSettings(
            max_tokens=tokens, json_schema='{"type":"object"}'
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", type=Path, default=REPO / ".viz" / "test-models")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "options")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    record = builtin_record(BUILTIN_BASES["smollm2-135m-instruct"])
    loaded = load_model(record, ensure_cached(record, args.models), precision="fp32")
    engine = BuiltinEngine(loaded.model, loaded.tokenizer, batch_max=1, queue_max=4)
    question = "Describe Paris as JSON: its city, country and three landmarks."
    ids = chat_prompt_ids(
        loaded.tokenizer, [{"role": "user", "content": question}], prompt_tokens_max=512
    )
    rows = []
    try:
        for name, settings in variants(args.tokens).items():
            per_token = []
            for _ in range(args.repeats + 1):  # the first run warms up (and compiles)
                job = engine.submit(ids, settings, [])
                "".join(job.pieces())
                assert job.first_token_at is not None and job.finished_at is not None
                decoding = job.finished_at - job.first_token_at  # the prompt's prefill excluded
                per_token.append(decoding * 1e3 / max(1, job.completion_tokens - 1))
            rows.append((name, statistics.median(per_token[1:]), job.completion_tokens))
            print(f"{name:28} {rows[-1][1]:6.1f} ms/token ({job.completion_tokens} tokens)")
    finally:
        engine.close(drain_s=5)
    baseline = rows[0][1]
    lines = [
        "# What each OpenAI option costs per token (builtin engine, fp32, one request)",
        "",
        f"`.venv/bin/python bench/options.py --repeats {args.repeats}` on {platform.machine()}, "
        f"{os.cpu_count()} cores; median of {args.repeats} runs after a warm-up.",
        "",
        "| option | ms / token | tokens | ratio to plain |",
        "| --- | --- | --- | --- |",
        *(f"| {name} | {ms:.1f} | {tokens} | {ms / baseline:.2f}x |" for name, ms, tokens in rows),
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[5:]))
    print(f"wrote {args.out / 'report.md'}")


if __name__ == "__main__":
    main()
