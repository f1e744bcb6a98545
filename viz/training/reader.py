"""A grounded reader: a LoRA adapter that answers from numbered sources briefly, cites them as
[n] and stops, or says "I can't find this in the sources." when they do not hold the answer.

Examples come from a QASPER-format folder (`viz.datasets.qasper`): a question, its paper and
its reference answers with their evidence paragraphs. Each prompt is exactly what `viz ask` and
the API's `viz.rag` send (`viz.rag.answer.grounded_messages`): the paragraph holding the
evidence among other paragraphs of the same paper, in a random place, numbered. The target is
the shortest reference answer (yes/no, the extractive spans, else the free-form answer), the
evidence's [n], and the end of the turn. A share of the examples hides the evidence, and
QASPER's unanswerable questions have none: their target is CANNOT_FIND. Only the answer's
tokens are trained on (the prompt is masked), so the adapter learns what to say and when to
stop, not the papers.

    examples = reader_examples(Path("../shared/data/qasper-train"), seed=0)
    result = train_reader(base_folder, examples, out, ReaderConfig(steps=300))
"""

from __future__ import annotations

import copy
import json
import random
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from viz.datasets.qasper import Question, load_questions, paper_text
from viz.errors import InvalidInput, NotFound
from viz.models.loading import quiet_transformers
from viz.models.precision import native_bf16
from viz.rag.answer import CANNOT_FIND, numbered_messages
from viz.training._model import prepare_model
from viz.training.adapters import load_adapter

__all__ = [
    "ReaderConfig",
    "ReaderExample",
    "reader_examples",
    "reader_folder",
    "shipped_reader",
    "tokenize",
    "train_reader",
    "with_reader",
]

PARAGRAPH_CHARS = (200, 700)  # a source: paragraphs merged to the first, cut at the second
ANSWER_CHARS_MAX = 300
MANIFEST_FILE = "viz-manifest.json"


@dataclass(frozen=True)
class ReaderExample:
    question_id: str
    messages: list[dict[str, str]]
    answer: str  # the target, without the end-of-turn token
    grounded: bool  # False: the sources do not hold the answer (target CANNOT_FIND)


@dataclass(frozen=True)
class ReaderConfig:
    steps: int = 300
    batch_size: int = 4
    learning_rate: float = 5e-4
    rank: int = 16
    alpha: int = 32
    prompt_tokens_max: int = 768
    seed: int = 0

    def check(self) -> None:
        if not 1 <= self.steps <= 100_000 or not 1 <= self.batch_size <= 256:
            raise InvalidInput("steps must be 1..100000 and batch size 1..256")
        if not 0 < self.learning_rate < 1:
            raise InvalidInput(f"learning rate {self.learning_rate} must be in (0, 1)")


def reader_examples(
    folder: Path,
    *,
    limit: int | None = None,
    seed: int = 0,
    hide_share: float = 0.2,
    sources: tuple[int, int] = (2, 4),
) -> list[ReaderExample]:
    """Grounded-answer examples from the questions of a QASPER-format `folder` (see above)."""
    rng = random.Random(seed)
    questions = load_questions(folder)
    rng.shuffle(questions)
    examples: list[ReaderExample] = []
    texts: dict[str, list[str]] = {}
    for question in questions:
        if limit is not None and len(examples) >= limit:
            break
        if question.paper_id not in texts:
            texts[question.paper_id] = paragraphs(paper_text(folder, question.paper_id))
        example = _example(question, texts[question.paper_id], rng, hide_share, sources)
        if example is not None:
            examples.append(example)
    if not examples:
        raise InvalidInput(f"{folder} gave no usable examples (questions with evidence)")
    return examples


def paragraphs(text: str) -> list[str]:
    """The text's paragraphs, short ones merged with the next, each cut to PARAGRAPH_CHARS[1]."""
    merged, current = [], ""
    for part in re.split(r"\n\s*\n", text):
        current = f"{current}\n{part.strip()}".strip()
        if len(current) >= PARAGRAPH_CHARS[0]:
            merged.append(current[: PARAGRAPH_CHARS[1]])
            current = ""
    if current:
        merged.append(current[: PARAGRAPH_CHARS[1]])
    return merged


def _example(
    question: Question,
    parts: list[str],
    rng: random.Random,
    hide_share: float,
    sources: tuple[int, int],
) -> ReaderExample | None:
    answer, gold = _reference(question, parts)
    unanswerable = bool(question.answers) and all(a.get("unanswerable") for a in question.answers)
    if answer is None and not unanswerable:
        return None  # answerable, but its evidence is not in the text (a table, a figure)
    count = rng.randint(*sources)
    hide = answer is not None and rng.random() < hide_share
    others = [i for i in range(len(parts)) if i not in gold]
    if answer is None or hide:  # unanswerable, or the evidence left out
        picked = rng.sample(others, min(count, len(others)))
        target, grounded = CANNOT_FIND, False
    else:
        shown = gold[:1]
        picked = shown + rng.sample(others, min(count - 1, len(others)))
        rng.shuffle(picked)
        target, grounded = f"{answer} [{picked.index(shown[0]) + 1}]", True
    if not picked:
        return None
    numbered = [(n, question.paper_title, parts[i]) for n, i in enumerate(picked, 1)]
    return ReaderExample(
        question.question_id, numbered_messages(question.question, numbered), target, grounded
    )


def _reference(question: Question, parts: list[str]) -> tuple[str | None, list[int]]:
    """(the shortest usable reference answer, the paragraphs holding its evidence); (None, [])
    when every annotator found it unanswerable or its evidence is not in the text."""
    found: list[tuple[str, list[int]]] = []
    for given in question.answers:
        if given.get("unanswerable"):
            continue
        gold = [
            i
            for i, part in enumerate(parts)
            for evidence in given.get("evidence") or []
            if evidence.strip() and evidence.strip()[:150] in part
        ]
        if not gold:
            continue
        text = _answer_text(given)
        if text:
            found.append((text, sorted(set(gold))))
    if not found:
        return None, []
    return min(found, key=lambda pair: len(pair[0]))


def _answer_text(given: dict[str, Any]) -> str:
    if given.get("yes_no") is not None:
        return "Yes." if given["yes_no"] else "No."
    spans = [s.strip() for s in given.get("extractive_spans") or [] if s.strip()]
    text = "; ".join(spans) if spans else (given.get("free_form_answer") or "").strip()
    if not text or len(text) > ANSWER_CHARS_MAX:
        return ""
    return text if text[-1] in ".!?" else f"{text}."


def tokenize(tokenizer: Any, example: ReaderExample, prompt_tokens_max: int) -> tuple[list, list]:
    """(input ids, labels): the chat prompt masked (-100), then the answer and end of turn."""
    prompt = tokenizer.apply_chat_template(
        example.messages, add_generation_prompt=True, tokenize=False
    )
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"][-prompt_tokens_max:]
    answer_ids = tokenizer(example.answer, add_special_tokens=False)["input_ids"]
    answer_ids = [*answer_ids, tokenizer.eos_token_id]
    return prompt_ids + answer_ids, [-100] * len(prompt_ids) + answer_ids


def train_reader(
    base_folder: Path,
    examples: list[ReaderExample],
    out: Path,
    config: ReaderConfig,
    *,
    base: dict[str, str],
    provenance: dict[str, Any],
    progress: Callable[[int, float], None] | None = None,
) -> dict[str, Any]:
    """Train the reader LoRA on `examples` and write it (PEFT safetensors and a manifest that
    names `base` {id, weights_sha256} and the data's `provenance`) to `out`; returns the
    manifest. bf16 autocast on CUDA and where the CPU computes bf16 natively, else fp32."""
    # deferred: torch is heavy
    import torch

    config.check()
    if out.exists():
        raise InvalidInput(f"{out} exists; remove it or choose another --name")
    rng = random.Random(config.seed)
    model = prepare_model(
        base_folder,
        method="lora",
        precision="fp32",
        rank=config.rank,
        alpha=config.alpha,
        dropout=0.05,
        target_modules=("all-linear",),
        seed=config.seed,
        checkpointing=False,
    )
    tokenizer = quiet_transformers().AutoTokenizer.from_pretrained(base_folder)
    encoded = [tokenize(tokenizer, e, config.prompt_tokens_max) for e in examples]
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=0.0)
    device = next(model.parameters()).device  # prepare_model puts it on CUDA when there is one
    bf16 = device.type == "cuda" or native_bf16()
    losses, began = [], time.monotonic()
    warm = max(1, config.steps // 20)  # linear warm-up over 5% of the steps, then linear decay
    model.train()
    for step in range(config.steps):
        for group in optimizer.param_groups:
            decay = (config.steps - step) / (config.steps - warm + 1)
            group["lr"] = config.learning_rate * min((step + 1) / warm, decay)
        batch = rng.sample(encoded, min(config.batch_size, len(encoded)))
        pad = tokenizer.pad_token_id or tokenizer.eos_token_id
        ids, labels, mask = (t.to(device) for t in _pad_left(batch, pad))
        answer = max(sum(1 for t in targets if t != -100) for _, targets in batch)
        with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
            # Logits for the answer's positions only: the vocabulary (49k) x the whole prompt
            # would take gigabytes and most of the step's time.
            logits = model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                logits_to_keep=answer + 1,
            ).logits[:, :-1]
        loss = torch.nn.functional.cross_entropy(
            logits.float().flatten(0, 1), labels[:, -answer:].flatten(), ignore_index=-100
        )
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss))
        if progress is not None:
            progress(step + 1, losses[-1])
    staging = out.with_name(f".{out.name}.writing")
    model.save_pretrained(staging, safe_serialization=True)
    manifest = {
        "format": 1,
        "kind": "reader",
        "name": out.name,
        "base": base,
        "method": "lora",
        "training": {
            **asdict(config),
            "examples": len(examples),
            "precision": "bf16 autocast" if bf16 else "fp32",
        },
        "data": provenance,
        "examples": {
            "grounded": sum(e.grounded for e in examples),
            "cannot_find": sum(not e.grounded for e in examples),
        },
        "metrics": {
            "train_loss_first": losses[0],
            "train_loss_last": sum(losses[-10:]) / len(losses[-10:]),
            "seconds": round(time.monotonic() - began, 1),
        },
    }
    (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
    staging.rename(out)
    return manifest


def _pad_left(batch: list[tuple[list, list]], pad_id: int) -> tuple[Any, Any, Any]:
    """Pad on the left, so every row's answer ends the row."""
    import torch  # deferred: torch is heavy

    width = max(len(ids) for ids, _ in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, (tokens, targets) in enumerate(batch):
        ids[row, width - len(tokens) :] = torch.tensor(tokens)
        labels[row, width - len(targets) :] = torch.tensor(targets)
        mask[row, width - len(tokens) :] = 1
    return ids, labels, mask


SHIPPED = Path(__file__).parent / "readers"  # trained readers that come with Viz, per base


def shipped_reader(base_id: str = "smollm2-135m-instruct") -> Path:
    """The reader trained for `base_id` that ships with Viz (120 steps on QASPER-train; its
    README and manifest say how), ready for `viz market publish`.

    Raises:
        NotFound: none ships for that base.
    """
    folder = SHIPPED / base_id
    if not (folder / "adapter_model.safetensors").is_file():
        raise NotFound(
            f"no reader ships for {base_id}; train one with: viz adapters train-reader --base "
            f"{base_id}"
        )
    return folder


def reader_folder(adapters_dir: Path, reader: str) -> Path:
    """The reader adapter named `reader` in `adapters_dir`, or the folder `reader`.

    Raises:
        NotFound: neither holds adapter_model.safetensors.
    """
    for folder in (adapters_dir / reader, Path(reader)):
        if (folder / "adapter_model.safetensors").is_file():
            return folder
    raise NotFound(
        f"no reader adapter {reader!r} (neither {adapters_dir / reader} nor a folder of that "
        "name holds adapter_model.safetensors); train one with: viz adapters train-reader"
    )


def with_reader(loaded: Any, folder: Path) -> Any:
    """A copy of `loaded` (a `viz.models.loading.LoadedModel`) with the reader adapter in
    `folder` merged into its weights: answers at the base's speed. The cached base is untouched."""
    merged = load_adapter(folder, copy.deepcopy(loaded.model)).merge_and_unload()
    merged.eval()
    return replace(loaded, model=merged, model_id=f"{loaded.model_id}+{folder.name}")
