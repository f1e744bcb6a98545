"""The plan of `viz eval routing`: which QASPER papers train which adapter, which questions query.

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
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path

from viz.datasets.qasper import Question, load_questions
from viz.errors import InvalidInput

__all__ = [
    "ATTRIBUTION",
    "CREATOR",
    "DESCRIPTIONS",
    "LICENCE",
    "SUBDOMAINS",
    "HierarchyPlan",
    "english_texts",
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


def english_texts(shared: Path) -> tuple[Path, ...]:
    """The general-English documents of the language adapter."""
    seeds = shared / "seeds"
    sample = Path(__file__).resolve().parents[2] / "training" / "general_sample.txt"
    return (sample, *sorted(seeds.glob("00[012]_*.txt")))


def _group(title: str) -> str | None:
    """The sub-domain of `title`, "none" when no rule matches, None when several do."""
    hits = [name for name, rule in SUBDOMAINS.items() if re.search(rule, title, re.IGNORECASE)]
    if not hits:
        return "none"
    return hits[0] if len(hits) == 1 else None
