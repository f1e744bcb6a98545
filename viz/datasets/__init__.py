"""Readers of shared corpora, below every folder that uses them (eval, rag training, bench).

`qasper`: question sets in the QASPER format (questions, paper texts, gold evidence spans).
"""

from viz.datasets.qasper import (
    Question,
    evidence_spans,
    is_gold,
    load_questions,
    paper_text,
    sample_questions,
)

__all__ = [
    "Question",
    "evidence_spans",
    "is_gold",
    "load_questions",
    "paper_text",
    "sample_questions",
]
