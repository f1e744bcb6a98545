"""Pretraining a base from scratch (issue 23): a byte-level BPE tokenizer trained on the admitted
documents (`viz.training.corpus`), then a Llama-architecture model trained on the same text by a
plain loop: AdamW, linear warm-up then cosine decay, resumable checkpoints (safetensors + JSON,
never pickles), held-out perplexity on documents kept out whole, bf16 autocast where the CPU
computes bf16 natively.

    tokenizer = train_tokenizer(texts, vocab_size=2048)
    result = pretrain(train_texts, held_out_texts, tokenizer, PretrainConfig(tokens=200_000), work)
    result.model_folder          # a transformers folder: config, weights, tokenizer, chat template

Compute: about 6 x parameters x tokens FLOPs (the forward and backward passes).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from viz.errors import Interrupted, InvalidInput, LimitExceeded
from viz.models.loading import quiet_transformers
from viz.models.precision import native_bf16
from viz.training.checkpoint import flatten_optimizer, unflatten_optimizer
from viz.training.ranks import Ranks, current_ranks, stop_requests
from viz.training.trainer import batch_indexes

__all__ = [
    "SIZES",
    "PretrainConfig",
    "PretrainResult",
    "check_memory",
    "model_config",
    "parameter_count",
    "pretrain",
    "train_tokenizer",
]

# Llama shapes by size; "base" is SmolLM2-135M's shape, "1b" Llama-3.2-1B's with SmolLM2's
# vocabulary (1.07B parameters). vocab: the tokenizer's size. Heads are 32 or more wide, as
# vLLM's attention kernels require.
SIZES: dict[str, dict[str, int]] = {
    "tiny": {"hidden": 64, "intermediate": 256, "layers": 2, "heads": 2, "kv_heads": 1,
             "vocab": 2048, "context": 128},
    "small": {"hidden": 256, "intermediate": 1024, "layers": 4, "heads": 8, "kv_heads": 4,
              "vocab": 8192, "context": 256},
    "base": {"hidden": 576, "intermediate": 1536, "layers": 30, "heads": 9, "kv_heads": 3,
             "vocab": 49152, "context": 2048},
    "1b": {"hidden": 2048, "intermediate": 8192, "layers": 16, "heads": 32, "kv_heads": 8,
           "vocab": 49152, "context": 2048},
}  # fmt: skip
TRAINING_BYTES_PER_PARAMETER = 16  # fp32 weights, gradients and AdamW's two moments
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
EVALUATION_WINDOWS_MAX = 256  # held-out windows perplexity is measured on, evenly spaced
PASSES_MAX = 50  # --tokens beyond this many passes over the corpus only memorises it
CHECKPOINTS = "checkpoints"


@dataclass(frozen=True)
class PretrainConfig:
    size: str = "tiny"
    tokens: int = 200_000  # training tokens (steps = tokens / (batch_size x context))
    batch_size: int = 8
    learning_rate: float = 3e-3
    warmup_steps: int = 10
    weight_decay: float = 0.1
    seed: int = 0
    checkpoint_every: int = 50  # steps

    @property
    def shape(self) -> dict[str, int]:
        if self.size not in SIZES:
            raise InvalidInput(f"size {self.size!r} is not one of {', '.join(SIZES)}")
        return SIZES[self.size]

    def steps(self) -> int:
        return max(1, math.ceil(self.tokens / (self.batch_size * self.shape["context"])))


@dataclass
class PretrainResult:
    model_folder: Path
    steps: int
    tokens_seen: int
    parameters: int
    losses: list[float] = field(default_factory=list)
    initial_perplexity: float = math.nan  # held-out, before the first step
    held_out_perplexity: float = math.nan
    tokens_per_second: float = 0.0
    seconds: float = 0.0
    precision: str = "fp32"


def train_tokenizer(texts: Sequence[str], *, vocab_size: int) -> Any:
    """A byte-level BPE tokenizer (the `tokenizers` library) trained on `texts`, with ChatML's
    special tokens and chat template; any byte sequence can be encoded."""
    # deferred: tokenizers and transformers are heavy
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if not texts or not any(text.strip() for text in texts):
        raise InvalidInput("no text to train a tokenizer on")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        unk_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        chat_template=CHAT_TEMPLATE,
    )


def model_config(size: str, vocab_size: int) -> Any:
    """The Llama configuration of `size` for a tokenizer of `vocab_size` tokens."""
    from transformers import LlamaConfig  # deferred: transformers is heavy

    shape = PretrainConfig(size=size).shape
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=shape["hidden"],
        intermediate_size=shape["intermediate"],
        num_hidden_layers=shape["layers"],
        num_attention_heads=shape["heads"],
        num_key_value_heads=shape["kv_heads"],
        max_position_embeddings=shape["context"],
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )


def windows(texts: Sequence[str], tokenizer: Any, context: int) -> list[list[int]]:
    """The texts tokenised, each ended by <|endoftext|>, concatenated and cut into windows of
    `context` tokens (the last, partial one dropped)."""
    stream: list[int] = []
    end = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    for text in texts:
        stream.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
        stream.append(end)
    return [stream[i : i + context] for i in range(0, len(stream) - context + 1, context)]


def pretrain(
    train_texts: Sequence[str],
    held_out_texts: Sequence[str],
    tokenizer: Any,
    config: PretrainConfig,
    work: Path,
    *,
    resume: bool = False,
    progress: Callable[[int, int, float, float], None] | None = None,
    ranks: Ranks | None = None,
) -> PretrainResult:
    """Train a model of `config.size` from scratch on `train_texts` for `config.tokens` tokens;
    checkpoints under `work/checkpoints` (`resume` continues from the newest), the model in
    `work/model`. `progress(step, steps, loss, tokens_per_second)` is called after each step.

    Under torchrun (`ranks`: this process's place, default the current group), every process
    trains on its slice of each batch and DDP averages the gradients, on CUDA when there is
    one; the main process evaluates, checkpoints and writes the model.

    Raises:
        InvalidInput: too little text for the size, or `tokens` beyond PASSES_MAX passes.
    """
    # deferred: torch and transformers are heavy
    import torch
    from transformers import LlamaForCausalLM

    shape, steps = config.shape, config.steps()
    train = windows(train_texts, tokenizer, shape["context"])
    held_out = windows(held_out_texts, tokenizer, shape["context"])
    _check_corpus(config, len(train), len(held_out))
    held_out = held_out[:: math.ceil(len(held_out) / EVALUATION_WINDOWS_MAX)]
    ranks = ranks or current_ranks()
    if config.batch_size % ranks.world:
        raise InvalidInput(
            f"batch size {config.batch_size} does not split evenly over {ranks.world} "
            "processes; use a multiple of --nproc"
        )
    device = (
        f"cuda:{ranks.rank % torch.cuda.device_count()}" if torch.cuda.is_available() else "cpu"
    )
    check_memory(config, len(tokenizer))
    torch.manual_seed(config.seed)
    model: Any = LlamaForCausalLM(model_config(config.size, len(tokenizer)))
    model.to(device)
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=config.learning_rate,
        betas=(0.9, 0.95),
        weight_decay=config.weight_decay,
    )
    checkpoints = work / CHECKPOINTS
    start = 0
    losses: list[float] = []
    found = _latest(checkpoints) if resume else None
    initial = math.nan
    if found is not None:
        start, losses, initial = _restore(found, model, optimizer)
    elif checkpoints.exists():
        shutil.rmtree(checkpoints)
    bf16 = device != "cpu" or native_bf16()
    result = PretrainResult(
        work / "model",
        steps,
        steps * config.batch_size * shape["context"],
        sum(p.numel() for p in model.parameters()),
        precision="bf16 autocast" if bf16 else "fp32",
    )
    if start == 0 and ranks.main:
        result.initial_perplexity = _perplexity(model, held_out, bf16)
    else:
        result.initial_perplexity = initial
    kept = {"losses": losses, "initial_perplexity": result.initial_perplexity}
    forward = ranks.wrap(model)  # DistributedDataParallel when there are several processes
    began = time.monotonic()
    model.train()
    with stop_requests() as stop_requested:
        for step in range(start, steps):
            if ranks.any(stop_requested()):
                _save(checkpoints, step, model, optimizer, kept, ranks)
                raise Interrupted(
                    f"pretraining interrupted at step {step}/{steps}; a checkpoint is saved: "
                    "continue with the same command plus --resume"
                )
            for group in optimizer.param_groups:
                group["lr"] = _learning_rate(config, step, steps)
            batch = batch_indexes(len(train), step, config.batch_size, config.seed)
            ids = torch.tensor([train[i] for i in batch[ranks.rank :: ranks.world]])
            with torch.autocast(device, torch.bfloat16, enabled=bf16):
                loss = forward(input_ids=ids.to(device), labels=ids.to(device)).loss
            loss.backward()  # DDP averages the gradients of the processes' slices here
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(ranks.mean(loss.detach()))
            done = (step + 1 - start) * config.batch_size * shape["context"]
            speed = done / max(1e-9, time.monotonic() - began)
            if progress is not None and ranks.main:
                progress(step + 1, steps, losses[-1], speed)
            if (step + 1) % config.checkpoint_every == 0 and step + 1 < steps:
                _save(checkpoints, step + 1, model, optimizer, kept, ranks)
    result.seconds = time.monotonic() - began
    trained_tokens = (steps - start) * config.batch_size * shape["context"]
    result.tokens_per_second = trained_tokens / max(1e-9, result.seconds)
    result.losses = losses
    if ranks.main:
        model.eval()
        result.held_out_perplexity = _perplexity(model, held_out, bf16)  # on its device
        _write_model(model, tokenizer, result.model_folder)
    ranks.barrier()
    return result


def _check_corpus(config: PretrainConfig, train: int, held_out: int) -> None:
    context = config.shape["context"]
    if train < config.batch_size:
        raise InvalidInput(
            f"the corpus gives {train} training windows of {context} tokens; size "
            f"{config.size} needs at least {config.batch_size} (one batch): add documents, or "
            "choose a smaller size or --batch-size"
        )
    if held_out < 1:
        raise InvalidInput(
            f"the held-out documents give no window of {context} tokens: keep out a longer "
            "document (or more of them)"
        )
    corpus_tokens = train * context
    if config.tokens > PASSES_MAX * corpus_tokens:
        raise InvalidInput(
            f"--tokens {config.tokens} is {config.tokens / corpus_tokens:.0f} passes over the "
            f"corpus's {corpus_tokens} tokens; at most {PASSES_MAX} (add documents, or ask for "
            f"at most {PASSES_MAX * corpus_tokens} tokens)"
        )


def parameter_count(size: str, vocab_size: int) -> int:
    """Parameters of a Llama of `size` with tied embeddings (no model built)."""
    shape = PretrainConfig(size=size).shape
    hidden, kv = shape["hidden"], shape["hidden"] * shape["kv_heads"] // shape["heads"]
    attention = 2 * hidden * hidden + 2 * hidden * kv
    layer = attention + 3 * hidden * shape["intermediate"] + 2 * hidden
    return vocab_size * hidden + shape["layers"] * layer + hidden


def check_memory(config: PretrainConfig, vocab_size: int | None = None) -> None:
    """On a CPU, refuse a size whose weights, gradients and optimizer state alone would take
    most of this machine's memory (before minutes of work and an out-of-memory kill).

    Raises:
        LimitExceeded: with the sizes to choose instead.
    """
    import torch  # deferred: torch is heavy

    if torch.cuda.is_available():
        return
    vocab_size = vocab_size or config.shape["vocab"]
    needed = TRAINING_BYTES_PER_PARAMETER * parameter_count(config.size, vocab_size)
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if needed > total * 0.6:  # activations and the runtime need the rest
        raise LimitExceeded(
            f"size {config.size} needs about {needed / 2**30:.1f} GiB to train (weights, "
            f"gradients, AdamW state), more than this machine's {total / 2**30:.1f} GiB: choose "
            "a smaller size, or train it on GPUs (see the README's cluster command)"
        )


def _learning_rate(config: PretrainConfig, step: int, steps: int) -> float:
    """Linear warm-up, then cosine decay to a tenth."""
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    span = max(1, steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / span)
    return config.learning_rate * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def _perplexity(model: Any, held_out: list[list[int]], bf16: bool) -> float:
    import torch  # deferred: torch is heavy

    if not held_out:
        return math.nan
    device = next(model.parameters()).device
    losses = []
    with torch.inference_mode(), torch.autocast(device.type, torch.bfloat16, enabled=bf16):
        for start in range(0, len(held_out), 8):
            ids = torch.tensor(held_out[start : start + 8], device=device)
            losses.append(float(model(input_ids=ids, labels=ids).loss) * len(ids))
    return math.exp(sum(losses) / len(held_out))


def _save(
    folder: Path, step: int, model: Any, optimizer: Any, kept: dict[str, Any], ranks: Ranks
) -> None:
    """A checkpoint by the main process: weights and optimizer tensors as safetensors, the rest
    as JSON, written to a staging folder and renamed into place; the newest two are kept."""
    # deferred: torch and safetensors are heavy
    import torch
    from safetensors.torch import save_file, save_model

    if not ranks.main:
        ranks.barrier()
        return
    target, staging = folder / f"step-{step:07d}", folder / f".step-{step:07d}.writing"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    save_model(model, str(staging / "model.safetensors"))
    tensors, state = flatten_optimizer(optimizer.state_dict())
    tensors["rng.torch"] = torch.get_rng_state()
    save_file(tensors, staging / "optimizer.safetensors")
    (staging / "state.json").write_text(json.dumps({"step": step, **kept, **state}))
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    for old in sorted(folder.glob("step-*"))[:-2]:
        shutil.rmtree(old, ignore_errors=True)
    ranks.barrier()


def _latest(folder: Path) -> Path | None:
    found = sorted(folder.glob("step-*")) if folder.is_dir() else []
    return found[-1] if found else None


def _restore(checkpoint: Path, model: Any, optimizer: Any) -> tuple[int, list[float], float]:
    # deferred: torch and safetensors are heavy
    import torch
    from safetensors.torch import load_file, load_model

    try:
        state = json.loads((checkpoint / "state.json").read_text())
        load_model(model, str(checkpoint / "model.safetensors"))
        tensors = load_file(checkpoint / "optimizer.safetensors")
    except (OSError, ValueError, RuntimeError) as error:
        raise InvalidInput(
            f"checkpoint {checkpoint} cannot be read ({error}); delete it to resume from the "
            "one before, or start again without --resume"
        ) from error
    torch.set_rng_state(tensors.pop("rng.torch"))
    optimizer.load_state_dict(unflatten_optimizer(tensors, state))
    initial = state.get("initial_perplexity")
    return int(state["step"]), list(state["losses"]), math.nan if initial is None else initial


def _write_model(model: Any, tokenizer: Any, folder: Path) -> None:
    quiet_transformers()  # no "Writing model shards" bar
    staging = folder.with_name(f".{folder.name}.writing")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)


def describe(config: PretrainConfig) -> dict[str, Any]:
    """The hyper-parameters, as the manifest records them."""
    return {**asdict(config), "shape": config.shape, "steps": config.steps()}
