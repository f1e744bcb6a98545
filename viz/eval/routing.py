"""`viz eval routing`: a real hierarchy built from QASPER, and how well queries are routed in it.

**The hierarchy** (`build_hierarchy`), trained and published into VIZ_HOME's catalogue by one
creator account, `qasper-creators`:

    base
    └── english        language: general English prose (the shipped general sample and the
        │              three notes of ../shared/seeds), not NLP papers
        └── nlp-research   domain: QASPER-train papers whose title matches no sub-domain rule
            ├── translation         sub-domains: QASPER-train papers whose title matches exactly
            ├── question-answering  one rule of SUBDOMAINS (regular expressions on the title,
            ├── sentiment           case-insensitive); a title matching two rules is left out
            └── dialogue

**Queries** are QASPER-dev questions (no dev paper is used in training) of the papers whose
title matches exactly one sub-domain rule, labelled by that sub-domain.

**Routing** (`evaluate_routing`): top-1 accuracy of the hierarchical walk (`match_query`, which
may stop above the sub-domain level when unsure: that counts as a miss, and how often it happens
is reported), of flat routing (the best-scoring sub-domain adapter, no tree), and of random
routing (1 / number of sub-domains, and a seeded draw). **Answer quality** on a sample: the
perplexity of the reference answer after the question, and the token F1 of a greedy answer, for
the base alone, the chain the hierarchical walk chose (auto), its last level alone (what the
chain's upper levels add; weights as the recommender sets them, and every level at 1), and the
full chain ending in the query's own sub-domain (an oracle) or in a wrong one (the next in
SUBDOMAINS order). A sweep of the walk's confidence thresholds shows coverage against precision.

Training windows are 128 tokens, 4 per step, LoRA rank 8 on every linear layer of the bf16 base.
"""

from __future__ import annotations

import json
import math
import random
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select

from viz.accounts import create_account, get_account
from viz.config import Settings
from viz.datasets.qasper import Question, load_questions
from viz.documents import DocumentInput, add_documents
from viz.errors import InvalidInput, NotFound
from viz.eval.metrics import answer_scores, mean, reference_text
from viz.market.catalogue import PublishRequest, publish_adapter
from viz.models import get_base_model
from viz.models.generate import GenerationSettings, chat_prompt_ids, generate_text
from viz.models.loading import ensure_cached, load_model
from viz.rag.cache import load_embedder_cached
from viz.routing.hierarchy import adapter_tree, walk
from viz.routing.match import match_query
from viz.routing.options import ANCESTOR_DECAY
from viz.routing.profiles import build_profile, profile_vector
from viz.serving.engines.builtin import LoraBatch, install_hooks, load_lora
from viz.store import open_database, session_scope
from viz.store.blobs import blob_path
from viz.store.schema import Adapter
from viz.training import (
    TrainingConfig,
    build_training_set,
    model_context_length,
    select_documents,
    train_adapter,
)

__all__ = [
    "SUBDOMAINS",
    "HierarchyPlan",
    "build_hierarchy",
    "evaluate_routing",
    "plan_hierarchy",
    "subdomain_of",
]

SUBDOMAINS = {
    "translation": r"translat|\bnmt\b",
    "question-answering": r"question|answer|\bqa\b|reading comprehension",
    "sentiment": r"sentiment|emotion|sarcas|stance|opinion|hate speech|offensive|toxic",
    "dialogue": r"dialog|conversation|chatbot",
}
DESCRIPTIONS = {
    "english": "general English prose: plain explanations, notes and everyday writing",
    "nlp-research": "natural language processing research papers: models, datasets, results",
    "translation": "machine translation research: NMT, BLEU, parallel corpora, low-resource "
    "language pairs",
    "question-answering": "question answering and reading comprehension research: QA datasets, "
    "answer extraction, retrieval",
    "sentiment": "sentiment analysis, emotion, stance, sarcasm and hate speech detection in text",
    "dialogue": "dialogue systems and conversational agents: chatbots, dialogue state, response "
    "generation",
}
THRESHOLDS = [(0.0, 0.0), (0.1, 0.0), (0.1, 0.02), (0.1, 0.05), (0.2, 0.05), (0.1, 0.1)]
CREATOR = "qasper-creators"
LICENCE = "CC-BY-4.0"
ATTRIBUTION = "Dasigi et al. 2021 (QASPER), AI2"


@dataclass(frozen=True)
class HierarchyPlan:
    english: tuple[Path, ...]
    domain: tuple[Path, ...]
    subdomains: dict[str, tuple[Path, ...]]
    queries: tuple[tuple[Question, str], ...]  # (dev question, its sub-domain)


def subdomain_of(title: str) -> str | None:
    """The one sub-domain whose rule matches `title`; None for no match or several."""
    group = _group(title)
    return None if group == "none" else group


def plan_hierarchy(
    train: Path,
    dev: Path,
    english: tuple[Path, ...],
    *,
    papers_per_subdomain: int = 12,
    domain_papers: int = 16,
    seed: int = 0,
) -> HierarchyPlan:
    """Choose the training papers of each adapter (train split) and the queries (dev split)."""
    by_group: dict[str | None, set[str]] = {}
    titles = {}
    for question in load_questions(train):
        titles[question.paper_id] = question.paper_title
    for paper_id, title in sorted(titles.items()):
        by_group.setdefault(_group(title), set()).add(paper_id)
    chooser = random.Random(seed)

    def pick(group: str | None, n: int) -> tuple[Path, ...]:
        papers = sorted(by_group.get(group, ()))
        chooser.shuffle(papers)
        return tuple(train / "papers" / f"{p}.txt" for p in sorted(papers[:n]))

    subdomains = {name: pick(name, papers_per_subdomain) for name in SUBDOMAINS}
    short = [name for name, papers in subdomains.items() if len(papers) < 2]
    if short:
        raise InvalidInput(f"too few training papers for {', '.join(short)} in {train}")
    queries = tuple(
        (q, label)
        for q in load_questions(dev)
        if (label := subdomain_of(q.paper_title)) is not None
    )
    return HierarchyPlan(english, pick("none", domain_papers), subdomains, queries)


def _group(title: str) -> str | None:
    """The sub-domain of `title`, "none" when no rule matches, None when several do."""
    hits = [name for name, rule in SUBDOMAINS.items() if re.search(rule, title, re.IGNORECASE)]
    if not hits:
        return "none"
    return hits[0] if len(hits) == 1 else None


def build_hierarchy(
    settings: Settings, plan: HierarchyPlan, *, steps: int = 40, say: Any = print
) -> None:
    """Catalogue the documents, train and publish the adapters; what is published is skipped,
    so a stopped build resumes."""
    # deferred: transformers is heavy
    from transformers import AutoTokenizer

    database = open_database(settings.database_url_resolved)
    levels: list[tuple[str, str | None, tuple[Path, ...]]] = [
        ("english", None, plan.english),
        ("nlp-research", "english", plan.domain),
        *((name, "nlp-research", papers) for name, papers in plan.subdomains.items()),
    ]
    with session_scope(database) as session:
        try:
            get_account(session, CREATOR)
        except NotFound:
            create_account(session, CREATOR, kind="firm", display_name="QASPER authors (AI2)")
        record = get_base_model(session, settings.default_base_model)
        session.expunge(record)
    folder = ensure_cached(record, settings.models_dir)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    config = TrainingConfig(
        method="lora",
        base_precision="bf16",
        steps=steps,
        batch_size=4,
        sequence_length=128,
        overlap=16,
        learning_rate=1e-3,
        held_out_fraction=0.2,
    )
    for level, (name, parent, paths) in enumerate(levels):
        with session_scope(database) as session:
            if session.scalar(select(Adapter).where(Adapter.name == name)) is not None:
                say(f"{name}: already published")
                continue
            owner = get_account(session, CREATOR)
            added, known = add_documents(
                session,
                settings.blobs_dir,
                owner,
                list(paths),
                DocumentInput(LICENCE, attribution=ATTRIBUTION, tags=(name,)),
                document_bytes_max=settings.document_bytes_max,
                documents_max=max(len(paths), 1),
                skip_existing=True,
            )
            documents = select_documents(session, owner, document_ids=[d.id for d in added + known])
            training_set = build_training_set(
                documents,
                settings.blobs_dir,
                tokenizer,
                sequence_length=config.sequence_length,
                overlap=config.overlap,
                held_out_fraction=config.held_out_fraction,
                context_length=model_context_length(folder),
            )
        out = settings.adapters_dir / name
        if not out.exists():
            say(f"{name}: training on {len(training_set.train)} documents, {steps} steps")
            train_adapter(
                name=name,
                account=CREATOR,
                base=record,
                base_folder=folder,
                training_set=training_set,
                config=config,
                adapters_dir=settings.adapters_dir,
                tokenizer=tokenizer,
                resume=(settings.adapters_dir / f".{name}.partial").exists(),
            )
        with session_scope(database) as session:
            owner = get_account(session, CREATOR)
            version, _ = publish_adapter(
                session,
                settings.blobs_dir,
                settings.models_dir,
                out,
                PublishRequest(
                    name=name,
                    version="1.0.0",
                    licence=LICENCE,
                    price_in_micro=10 * min(level + 1, 3),  # deeper levels cost more
                    price_out_micro=30 * min(level + 1, 3),
                    parent=parent,
                    tags=(name,),
                    description=DESCRIPTIONS[name],
                ),
                owner=owner,
            )
            build_profile(session, version, settings.blobs_dir, load_embedder_cached())
            say(f"{name}: published ({version.status}); profile from {version.profile_source}")
    database.dispose()


def evaluate_routing(
    settings: Settings,
    plan: HierarchyPlan,
    out: Path,
    *,
    quality_questions: int = 40,
    max_tokens: int = 32,
    seed: int = 0,
    say: Any = print,
) -> dict[str, Any]:
    """Route every query, score answer quality on a sample; write report.md and results.json."""

    started = time.perf_counter()
    embedder = load_embedder_cached()
    database = open_database(settings.database_url_resolved)
    with session_scope(database) as session:
        roots = adapter_tree(session, settings.default_base_model)
        nodes = {n.name: n for n in walk(roots)}
        missing = [n for n in ["english", "nlp-research", *SUBDOMAINS] if n not in nodes]
        if missing:
            raise InvalidInput(
                f"the hierarchy lacks {', '.join(missing)}; build it first (viz eval routing "
                "builds it unless --no-build)"
            )
        vectors = {
            n.version.id: profile_vector(session, n.version, settings.blobs_dir, embedder)
            for n in nodes.values()
        }
        adapters = {
            name: load_lora(
                blob_path(settings.blobs_dir, n.version.weights_sha256),
                n.version.config_json,
                version_id=n.version.id,
                label=n.label,
            )
            for name, n in nodes.items()
        }
        record = get_base_model(session, settings.default_base_model)
        session.expunge(record)
    leaves = list(SUBDOMAINS)
    questions = [q for q, _ in plan.queries]
    labels = [label for _, label in plan.queries]
    query_vectors = embedder.encode([q.question for q in questions])
    chooser = random.Random(seed)
    routed: list[dict[str, Any]] = []
    for vector, label in zip(query_vectors, labels, strict=True):
        match = match_query(vector, roots, vectors)
        path = [level.name for level in match.path]
        flat = max(leaves, key=lambda name: float(vector @ vectors[nodes[name].version.id]))
        routed.append(
            {
                "label": label,
                "path": path,
                "hierarchical": path[-1] if len(path) == 3 else None,
                "flat": flat,
                "random": chooser.choice(leaves),
            }
        )
    sweep = []
    for min_score, min_margin in THRESHOLDS:
        chosen = []
        for vector in query_vectors:
            walk_path = match_query(
                vector, roots, vectors, min_score=min_score, min_margin=min_margin
            ).path
            chosen.append(walk_path[-1].name if len(walk_path) == 3 else None)
        committed = [(c, label) for c, label in zip(chosen, labels, strict=True) if c]
        sweep.append(
            {
                "min_score": min_score,
                "min_margin": min_margin,
                "accuracy": sum(c == label for c, label in committed) / len(labels),
                "reached": len(committed) / len(labels),
                "precision": _share([c == label for c, label in committed]),
            }
        )
    n = len(routed)
    accuracy = {
        kind: sum(r[kind] == r["label"] for r in routed) / n
        for kind in ("hierarchical", "flat", "random")
    }
    reached = [r for r in routed if r["hierarchical"] is not None]
    depth = Counter(len(r["path"]) for r in routed)
    per_label = {
        label: {
            "queries": sum(r["label"] == label for r in routed),
            "hierarchical": _share(
                [r["hierarchical"] == label for r in routed if r["label"] == label]
            ),
            "flat": _share([r["flat"] == label for r in routed if r["label"] == label]),
        }
        for label in leaves
    }
    say(
        f"routing {n} queries: hierarchical {accuracy['hierarchical']:.3f}, flat "
        f"{accuracy['flat']:.3f}, random {accuracy['random']:.3f} (expected {1 / len(leaves):.3f})"
    )

    # Answer quality on a sample with a reference answer (free-form or extractive).
    loaded = load_model(record, settings.models_dir, precision="fp32")
    model, tokenizer = loaded.model, loaded.tokenizer
    current: list[Any] = [None]
    install_hooks(model, current)
    sample = [(i, reference) for i, q in enumerate(questions) if (reference := _reference(q))]
    chooser.shuffle(sample)
    sample = sample[:quality_questions]

    def wrong(r: dict[str, Any]) -> list[str]:
        return ["english", "nlp-research", leaves[(leaves.index(r["label"]) + 1) % len(leaves)]]

    configurations: dict[str, Any] = {  # name -> (chain of a routed query, weights)
        "base": (lambda _r: [], None),
        "auto (weights 0.25 / 0.5 / 1)": (lambda r: r["path"], _decayed),
        "auto, every level at 1": (lambda r: r["path"], lambda n: [1.0] * n),
        "auto, last level alone": (lambda r: r["path"][-1:], _decayed),
        "right sub-domain, oracle (0.25 / 0.5 / 1)": (
            lambda r: ["english", "nlp-research", r["label"]],
            _decayed,
        ),
        "wrong sub-domain (0.25 / 0.5 / 1)": (wrong, _decayed),
    }
    quality: dict[str, dict[str, list[float]]] = {c: {"nll": [], "f1": []} for c in configurations}
    for done, (index, reference) in enumerate(sample, 1):
        question = questions[index]
        messages = [{"role": "user", "content": question.question}]
        for name, (chain_of, weights_of) in configurations.items():
            chain = chain_of(routed[index])
            weights = weights_of(len(chain)) if chain else []
            mix = [(adapters[a], w) for a, w in zip(chain, weights, strict=True)]
            current[0] = LoraBatch.for_rows([mix]) if mix else None
            quality[name]["nll"].append(_answer_nll(model, tokenizer, messages, reference))
            stream = generate_text(
                model, tokenizer, messages, GenerationSettings(max_tokens=max_tokens)
            )
            prediction = "".join(stream)
            quality[name]["f1"].append(answer_scores(prediction, list(question.answers))[1])
        current[0] = None
        if done % 10 == 0:
            say(f"answer quality: {done}/{len(sample)} questions")
    results = {
        "queries": n,
        "subdomains": leaves,
        "accuracy": accuracy,
        "random_expected": 1 / len(leaves),
        "reached_subdomain": len(reached) / n,
        "hierarchical_precision": _share([r["hierarchical"] == r["label"] for r in reached]),
        "stopped_at_depth": {str(k): v for k, v in sorted(depth.items())},
        "per_subdomain": per_label,
        "threshold_sweep": sweep,
        "quality_questions": len(sample),
        "quality": {
            name: {
                "perplexity": math.exp(sum(v["nll"]) / len(v["nll"])) if v["nll"] else None,
                "token_f1": mean(v["f1"]),
            }
            for name, v in quality.items()
        },
        "training_papers": {
            "english": [p.name for p in plan.english],
            "nlp-research": [p.stem for p in plan.domain],
            **{k: [p.stem for p in v] for k, v in plan.subdomains.items()},
        },
        "seconds": round(time.perf_counter() - started, 1),
    }
    _write_report(out, results)
    database.dispose()
    return results


def _answer_nll(model: Any, tokenizer: Any, messages: list[dict[str, str]], answer: str) -> float:
    """Mean negative log-likelihood per token of `answer` as the assistant's reply."""
    # deferred: torch is heavy
    import torch

    prompt = chat_prompt_ids(tokenizer, messages, prompt_tokens_max=1024)
    reply = tokenizer(answer, add_special_tokens=False)["input_ids"][:128]
    ids = torch.tensor([prompt + reply])
    with torch.inference_mode():
        logits = model(ids).logits[0, len(prompt) - 1 : -1].float()
    return float(torch.nn.functional.cross_entropy(logits, torch.tensor(reply)))


def _decayed(n: int) -> list[float]:
    """The recommender's per-level weights for a chain of `n` levels (deepest 1, halving up)."""
    return [ANCESTOR_DECAY ** (n - 1 - i) for i in range(n)]


def _reference(question: Question) -> str | None:
    """The first free-form or extractive reference answer (not yes/no, not unanswerable)."""
    for answer in question.answers:
        if answer.get("unanswerable") or answer.get("yes_no") is not None:
            continue
        if text := reference_text(answer):
            return text
    return None


def _share(flags: list[bool]) -> float | None:
    return sum(flags) / len(flags) if flags else None


def _write_report(out: Path, results: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    accuracy = results["accuracy"]
    lines = [
        "# Routing evaluation: a QASPER hierarchy",
        "",
        "Hierarchy: base -> english -> nlp-research -> "
        + ", ".join(results["subdomains"])
        + " (how papers were grouped: `viz/eval/routing.py`).",
        f"Queries: {results['queries']} QASPER-dev questions of papers whose title names one "
        "sub-domain; no dev paper was used in training.",
        "",
        "## Top-1 routing accuracy (the right sub-domain adapter)",
        "",
        "| routing | accuracy | vs random |",
        "|---|---|---|",
    ]
    expected = results["random_expected"]
    for kind in ("hierarchical", "flat", "random"):
        lines.append(f"| {kind} | {accuracy[kind]:.3f} | {accuracy[kind] / expected:.2f}x |")
    lines += [
        f"| random (expected) | {expected:.3f} | 1.00x |",
        "",
        f"The hierarchical walk reached a sub-domain for {results['reached_subdomain']:.1%} of "
        f"queries (stopped at depth: {results['stopped_at_depth']}); when it did, it was right "
        f"{_percent(results['hierarchical_precision'])} of the time.",
        "",
        "Confidence thresholds of the walk (defaults: min_score 0.1, min_margin 0.02). With no "
        "threshold the walk is greedy and, as this tree has one language and one domain, picks "
        "what flat routing picks; thresholds trade coverage for precision:",
        "",
        "| min_score | min_margin | top-1 accuracy | reached a sub-domain | right when reached |",
        "|---|---|---|---|---|",
        *(
            f"| {row['min_score']} | {row['min_margin']} | {row['accuracy']:.3f} | "
            f"{row['reached']:.1%} | {_percent(row['precision'])} |"
            for row in results["threshold_sweep"]
        ),
        "",
        "| sub-domain | queries | hierarchical | flat |",
        "|---|---|---|---|",
    ]
    for label, row in results["per_subdomain"].items():
        lines.append(
            f"| {label} | {row['queries']} | {_percent(row['hierarchical'])} | "
            f"{_percent(row['flat'])} |"
        )
    lines += [
        "",
        f"## Answer quality ({results['quality_questions']} questions, closed book)",
        "",
        "| model | reference-answer perplexity | token F1 |",
        "|---|---|---|",
    ]
    for name, row in results["quality"].items():
        perplexity = f"{row['perplexity']:.2f}" if row["perplexity"] else "-"
        f1 = f"{row['token_f1']:.3f}" if row["token_f1"] is not None else "-"
        lines.append(f"| {name} | {perplexity} | {f1} |")
    lines += ["", f"Run time: {results['seconds']} s.", ""]
    (out / "report.md").write_text("\n".join(lines))


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def english_texts(shared: Path) -> tuple[Path, ...]:
    """The general-English documents of the language adapter."""
    seeds = shared / "seeds"
    sample = Path(__file__).resolve().parents[1] / "training" / "general_sample.txt"
    return (sample, *sorted(seeds.glob("00[012]_*.txt")))
