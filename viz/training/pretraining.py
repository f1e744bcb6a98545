"""The pretraining recipe: catalogued, openly licensed documents in, a registered base out whose
provenance is true by construction (issue 23).

    result = pretrain_from_documents(engine, name="open-tiny", account="ai2", tags=["open"],
                                     config=PretrainConfig(size="tiny", tokens=100_000),
                                     blobs_dir=home / "blobs", models_dir=home / "models")

The steps, in order: check the id is free; admit the documents one by one
(`admit_for_pretraining`: each refusal named, the base's licence and attributions derived);
keep whole documents out for held-out perplexity; train the byte-level BPE tokenizer on the
training documents; pretrain (`viz.training.pretrain`, resumable); write `viz-manifest.json`
(every document's sha256, licence, attribution and tokens per epoch, the tokenizer's corpus and
hash, hyper-parameters, hardware, libraries, the weights' sha256) and a model card; then, in one
transaction, register the base as `open-licensed-only` (the registry re-verifies the manifest
against the catalogue) and append a `base_pretrained` entry to the public log.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from viz.accounts import get_account
from viz.documents import read_document_text
from viz.errors import InvalidInput
from viz.log.store import append_entry
from viz.models.provenance import MANIFEST_FILE, MANIFEST_FORMAT, MANIFEST_KIND
from viz.models.registry import add_base_model, check_new_model_id, folder_weights_sha256
from viz.store.blobs import sha256_file
from viz.store.database import session_scope
from viz.store.schema import BaseModel
from viz.training.corpus import Refused, admit_for_pretraining
from viz.training.distributed import pretrain_in_processes
from viz.training.manifest import hardware, library_versions
from viz.training.pretrain import (
    PretrainConfig,
    PretrainResult,
    check_memory,
    describe,
    pretrain,
    train_tokenizer,
)
from viz.training.ranks import Ranks, current_ranks

__all__ = ["Pretrained", "pretrain_from_documents", "pretraining_folder"]

HELD_OUT_SHARE = 0.1  # of the documents, at least one, kept out whole for held-out perplexity
RUN_FILE = "run.json"
TOKENIZER = "tokenizer"
Say = Callable[[str], None]


@dataclass(frozen=True)
class Source:
    """One admitted document, detached from the session, with its text."""

    id: int
    sha256: str
    licence: str
    attribution: str
    title: str
    text: str


@dataclass
class Pretrained:
    record: BaseModel
    manifest: dict[str, Any]
    result: PretrainResult
    refused: tuple[Refused, ...]


def pretraining_folder(models_dir: Path, name: str) -> Path:
    """Where base `name` is pretrained: checkpoints, tokenizer, and the model folder."""
    return models_dir / "pretrained" / name


def pretrain_from_documents(
    engine: Engine,
    *,
    name: str,
    account: str,
    config: PretrainConfig,
    blobs_dir: Path,
    models_dir: Path,
    document_ids: Sequence[int] = (),
    owners: Sequence[str] = (),
    tags: Sequence[str] = (),
    held_out: Sequence[int] = (),
    licence: str | None = None,
    resume: bool = False,
    nproc: int = 1,
    progress: Callable[[int, int, float, float], None] | None = None,
    say: Say = lambda _message: None,
) -> Pretrained | None:
    """Pretrain base `name` for `account` on the documents named by id, owner or tag; register it.

    `held_out`: document ids to keep out for perplexity (default: a tenth, at least one).
    `licence`: the base's licence, if the documents' terms leave a choice.
    `nproc` > 1: train in that many processes under torchrun (DDP; the batch is split).
    Started by torchrun itself (one process per GPU, on several nodes sharing `models_dir`),
    every process calls this; the main one trains the tokenizer and registers the base, and
    the others return None.

    Raises:
        InvalidInput: bad id or size, nothing admitted, too little text, tokens beyond the
            corpus, a resumed run on another corpus or config.
        LimitExceeded: a size too large for this machine's memory.
        Conflict: the id is taken.
        NotFound: an unknown account or document.
        Interrupted: stopped by Ctrl-C, with a checkpoint to `resume` from.
    """
    steps = config.steps()  # checks the size before any slow work
    check_memory(config)
    ranks = _join_group() if nproc == 1 else Ranks()
    with session_scope(engine) as session:
        check_new_model_id(session, name)
        creator = get_account(session, account)
        corpus = admit_for_pretraining(
            session,
            creator,
            document_ids=document_ids,
            owners=[get_account(session, owner) for owner in owners],
            tags=tags,
        )
        base_licence = corpus.licence(licence)
        sources = [
            Source(
                d.id,
                d.sha256,
                d.licence,
                (d.attribution or f"{d.title} ({d.licence})") if terms.attribution else "",
                d.title,
                read_document_text(blobs_dir, d),
            )
            for d, terms in corpus.admitted
        ]
    train, kept_out = _split(sources, held_out)
    work = pretraining_folder(models_dir, name)
    if ranks.main:
        for refusal in corpus.refused:
            say(f"refused {refusal}")
        _check_run(work, train, kept_out, config, resume)
        say(
            f"pretraining {name} ({config.size}, {config.tokens:,} tokens, {steps} steps) "
            f"on {len(train)} documents, {len(kept_out)} kept out; licence {base_licence}"
        )
        tokenizer = _tokenizer(work, train, config, resume)
    ranks.barrier()
    if not ranks.main:
        tokenizer = _tokenizer(work, train, config, resume=True)
    started = datetime.now(UTC)
    texts = ([s.text for s in train], [s.text for s in kept_out])
    if nproc > 1:
        result = pretrain_in_processes(
            nproc,
            train_texts=texts[0],
            held_out_texts=texts[1],
            config=config,
            work=work,
            resume=resume,
        )
    else:
        result = pretrain(*texts, tokenizer, config, work, resume=resume, progress=progress)
    if not ranks.main:
        return None
    manifest = _manifest(
        name, account, base_licence, train, kept_out, corpus.refused, tokenizer, config, result
    )
    manifest["run"]["started"] = started.isoformat(timespec="seconds")
    _write_manifest(result.model_folder, manifest)
    with session_scope(engine) as session:
        record = add_base_model(
            session,
            str(result.model_folder),
            model_id=name,
            licence=base_licence,
            provenance_class="open-licensed-only",
            blobs_dir=blobs_dir,
        )
        append_entry(session, "base_pretrained", _log_entry(manifest, result.model_folder))
    shutil.rmtree(work / "checkpoints", ignore_errors=True)
    return Pretrained(record, manifest, result, corpus.refused)


def _join_group() -> Ranks:
    """This process's place when torchrun started it (WORLD_SIZE > 1), joining the group."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Ranks()
    # deferred: torch is heavy
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return current_ranks()


def _split(sources: list[Source], held_out: Sequence[int]) -> tuple[list[Source], list[Source]]:
    """Training and held-out documents: the ids asked for, else a tenth (at least one) chosen
    by sha256, so the split depends on the content, not on the order of upload."""
    if len(sources) < 2:
        raise InvalidInput(
            f"{len(sources)} document admitted; pretraining needs at least two: one to train "
            "on and one kept out whole to measure held-out perplexity"
        )
    if held_out:
        admitted = {s.id for s in sources}
        strangers = sorted(set(held_out) - admitted)
        if strangers:
            raise InvalidInput(
                f"--held-out {strangers} are not among the admitted documents {sorted(admitted)}"
            )
        kept = set(held_out)
    else:
        count = max(1, round(len(sources) * HELD_OUT_SHARE))
        kept = {s.id for s in sorted(sources, key=lambda s: s.sha256)[:count]}
    train = [s for s in sources if s.id not in kept]
    if not train:
        raise InvalidInput("every admitted document is held out; keep at least one to train on")
    return train, [s for s in sources if s.id in kept]


def _check_run(
    work: Path, train: list[Source], kept_out: list[Source], config: PretrainConfig, resume: bool
) -> None:
    """Record what this run is; a resumed run must be the same one."""
    run = {
        "train": [s.sha256 for s in train],
        "held_out": [s.sha256 for s in kept_out],
        "config": describe(config),
    }
    path = work / RUN_FILE
    if resume:
        if not path.is_file():
            raise InvalidInput(
                f"there is no interrupted pretraining in {work} to resume; run without --resume"
            )
        if json.loads(path.read_text()) != run:
            raise InvalidInput(
                f"the run in {work} was on other documents or settings; resume it with the "
                "same options, or run without --resume to start again"
            )
        return
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    path.write_text(json.dumps(run, indent=2))


def _tokenizer(work: Path, train: list[Source], config: PretrainConfig, resume: bool) -> Any:
    folder = work / TOKENIZER
    if resume and (folder / "tokenizer.json").is_file():
        from transformers import PreTrainedTokenizerFast  # deferred: transformers is heavy

        return PreTrainedTokenizerFast.from_pretrained(folder)
    tokenizer = train_tokenizer([s.text for s in train], vocab_size=config.shape["vocab"])
    tokenizer.save_pretrained(folder)
    return tokenizer


def _manifest(
    name: str,
    account: str,
    licence: str,
    train: list[Source],
    kept_out: list[Source],
    refused: tuple[Refused, ...],
    tokenizer: Any,
    config: PretrainConfig,
    result: PretrainResult,
) -> dict[str, Any]:
    def entry(source: Source, split: str) -> dict[str, Any]:
        tokens = len(tokenizer(source.text, add_special_tokens=False)["input_ids"]) + 1
        return {
            "id": source.id,
            "sha256": source.sha256,
            "licence": source.licence,
            "attribution": source.attribution,
            "title": source.title,
            "tokens": tokens,
            "split": split,
        }

    documents = [entry(s, "train") for s in train] + [entry(s, "held_out") for s in kept_out]
    corpus_tokens = sum(d["tokens"] for d in documents if d["split"] == "train")
    folder = result.model_folder

    return {
        "format": MANIFEST_FORMAT,
        "kind": MANIFEST_KIND,
        "name": name,
        "creator": account,
        "licence": licence,
        "non_commercial": "-NC-" in f"{licence.upper()}-",
        "attributions": sorted({s.attribution for s in (*train, *kept_out) if s.attribution}),
        "architecture": "LlamaForCausalLM",
        "parameters": result.parameters,
        "documents": documents,
        "refused": [
            {"id": r.document_id, "filename": r.filename, "reason": r.reason} for r in refused
        ],
        "tokenizer": {
            "kind": "byte-level BPE (tokenizers)",
            "vocab_size": len(tokenizer),
            "corpus": [s.id for s in train],
            "sha256": sha256_file(folder / "tokenizer.json"),
        },
        "hyperparameters": describe(config),
        "training": {
            "tokens_seen": result.tokens_seen,
            "epochs": round(result.tokens_seen / max(1, corpus_tokens), 3),
            "steps": result.steps,
            "precision": result.precision,
            "chat_template": "ChatML; no instruction stage (no openly licensed instruction "
            "data offline): a completion model",
        },
        "metrics": {
            "held_out_perplexity_initial": _number(result.initial_perplexity),
            "held_out_perplexity": _number(result.held_out_perplexity),
            "final_loss": _number(result.losses[-1]) if result.losses else None,
            "tokens_per_second": round(result.tokens_per_second, 1),
            "seconds": round(result.seconds, 1),
        },
        "losses": [round(loss, 4) for loss in result.losses],
        "run": {
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
            "hardware": hardware(),
            "libraries": library_versions(),
        },
        "weights_sha256": folder_weights_sha256(folder),
    }


def _number(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 4)


def _write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    (folder / "README.md").write_text(model_card(manifest))


def _log_entry(manifest: dict[str, Any], folder: Path) -> dict[str, Any]:
    return {
        "base": manifest["name"],
        "creator": manifest["creator"],
        "licence": manifest["licence"],
        "weights_sha256": manifest["weights_sha256"],
        "manifest_sha256": hashlib.sha256((folder / MANIFEST_FILE).read_bytes()).hexdigest(),
        "documents": [[d["id"], d["sha256"]] for d in manifest["documents"]],
        "tokens_seen": manifest["training"]["tokens_seen"],
        "at": int(time.time()),
    }


def model_card(manifest: dict[str, Any]) -> str:
    """A Hugging Face style README: licence, provenance, attributions, documents, figures."""
    m, t = manifest["metrics"], manifest["training"]
    attributions = "\n".join(f"- {line}" for line in manifest["attributions"]) or "- (none needed)"
    documents = "\n".join(
        f"| {d['id']} | {d['title'][:60]} | {d['licence']} | {d['tokens']} | {d['split']} |"
        for d in manifest["documents"]
    )
    refused = "\n".join(
        f"- document {r['id']} ({r['filename']}): {r['reason']}" for r in manifest["refused"]
    )
    return f"""---
license: {manifest["licence"].lower()}
library_name: transformers
tags:
- viz
- open-licensed-only
- pretrained-from-scratch
---

# {manifest["name"]}

A {manifest["parameters"]:,}-parameter Llama-architecture base pretrained from scratch by Viz for
`{manifest["creator"]}` on openly licensed, catalogued documents only: {t["tokens_seen"]:,}
tokens ({t["epochs"]} epochs), {t["precision"]}. Held-out perplexity (documents kept out whole)
{m["held_out_perplexity_initial"]} before training, {m["held_out_perplexity"]} after. A
completion model with a ChatML template: no instruction stage, as no openly licensed
instruction data is available offline.

Licence: {manifest["licence"]}{" (non-commercial)" if manifest["non_commercial"] else ""}.
Every document's sha256, licence and tokens are in `viz-manifest.json`; check them against the
catalogue with `viz models verify {manifest["name"]}`.

## Attributions

{attributions}

## Documents

| id | title | licence | tokens per epoch | split |
| --- | --- | --- | --- | --- |
{documents}

## Refused

{refused or "- none"}
"""
