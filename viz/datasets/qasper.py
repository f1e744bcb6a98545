"""Question sets in the QASPER format: a folder with `questions.json` and `papers/<id>.txt`.

Each question is `{paper_id, paper_title, question_id, question, answers: [{unanswerable,
yes_no, free_form_answer, extractive_spans, evidence}]}`; evidence paragraphs appear verbatim in
the paper's text, which is how a chunk is judged relevant: it is a **gold chunk** when it covers
at least half of some evidence paragraph (or 200 characters of a long one). Evidence that is not
in the text (QASPER's "FLOAT SELECTED: Table ..." captions) is ignored.

    questions = load_questions(Path("../shared/data/qasper-dev"))
    spans = evidence_spans(paper_text, questions[0])
    relevant = {c.id for c in chunks if is_gold(c.start, c.end, spans)}
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from viz.errors import InvalidInput, NotFound

__all__ = [
    "Question",
    "evidence_spans",
    "is_gold",
    "load_questions",
    "paper_text",
    "sample_questions",
]

QUESTION_FIELDS = ("paper_id", "question_id", "question", "answers")
ANSWER_FIELDS = ("unanswerable", "extractive_spans", "free_form_answer", "evidence")
GOLD_OVERLAP_CHARS = 200


@dataclass(frozen=True)
class Question:
    paper_id: str
    paper_title: str
    question_id: str
    question: str
    answers: tuple[dict[str, Any], ...]

    @property
    def evidence(self) -> list[str]:
        return sorted({e for a in self.answers for e in a.get("evidence") or [] if e.strip()})


def load_questions(folder: Path) -> list[Question]:
    """Every question in `folder`, checked: each names its fields and its paper exists.

    Raises:
        NotFound: no such folder or questions.json.
        InvalidInput: the file is not JSON, or questions miss fields or papers (all named).
    """
    path = folder / "questions.json"
    if not path.is_file():
        raise NotFound(
            f"{folder} has no questions.json; give a folder in the QASPER format "
            "(questions.json and papers/<paper_id>.txt)"
        )
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidInput(f"{path} is not valid JSON: {error}") from error
    if not isinstance(raw, list) or not raw:
        raise InvalidInput(f"{path} must hold a non-empty list of questions")
    problems: list[str] = []
    questions: list[Question] = []
    for number, item in enumerate(raw):
        label = f"question {number}" + (
            f" ({item.get('question_id')})" if isinstance(item, dict) else ""
        )
        if not isinstance(item, dict):
            problems.append(f"{label} is not an object")
            continue
        missing = [f for f in QUESTION_FIELDS if f not in item]
        answers: list[Any] = item.get("answers") or []
        if not missing and (not isinstance(answers, list) or not answers):
            missing.append("answers (a non-empty list)")
        elif not missing:
            for answer in answers:
                if not isinstance(answer, dict):
                    missing.append("answers[] objects")
                    break
                missing += [f"answers[].{f}" for f in ANSWER_FIELDS if f not in answer]
        if missing:
            problems.append(f"{label} lacks {', '.join(dict.fromkeys(missing))}")
            continue
        if not (folder / "papers" / f"{item['paper_id']}.txt").is_file():
            problems.append(f"{label}: no papers/{item['paper_id']}.txt")
            continue
        questions.append(
            Question(
                str(item["paper_id"]),
                str(item.get("paper_title", "")),
                str(item["question_id"]),
                str(item["question"]),
                tuple(answers),
            )
        )
    if problems:
        shown = "; ".join(problems[:5]) + (
            f"; and {len(problems) - 5} more" if problems[5:] else ""
        )
        raise InvalidInput(f"{path}: {shown}")
    return questions


def sample_questions(questions: list[Question], n: int | None, *, seed: int = 0) -> list[Question]:
    """`n` questions drawn with `seed` (all of them when n is None), in the file's order."""
    if n is None or n >= len(questions):
        return list(questions)
    if n < 1:
        raise InvalidInput(f"--sample {n} must be at least 1")
    chosen = set(random.Random(seed).sample(range(len(questions)), n))
    return [q for i, q in enumerate(questions) if i in chosen]


def paper_text(folder: Path, paper_id: str) -> str:
    return (folder / "papers" / f"{paper_id}.txt").read_text(encoding="utf-8")


def evidence_spans(text: str, question: Question) -> list[tuple[int, int]]:
    """Where the question's evidence paragraphs are in the paper (first occurrence each)."""
    spans = []
    for evidence in question.evidence:
        start = text.find(evidence.strip())
        if start >= 0:
            spans.append((start, start + len(evidence.strip())))
    return spans


def is_gold(start: int, end: int, spans: list[tuple[int, int]]) -> bool:
    """Whether the text [start, end) covers half of an evidence span, or 200 characters of it."""
    for s, e in spans:
        overlap = min(end, e) - max(start, s)
        if overlap > 0 and overlap >= min((e - s) / 2, GOLD_OVERLAP_CHARS):
            return True
    return False
