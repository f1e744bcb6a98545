"""Evaluation of answers with and without retrieval: SQuAD/QASPER answer scores, retrieval
and citation metrics (`metrics`), and the experiment report writer (`report`)."""

from viz.eval.metrics import (
    CANNOT_FIND_PHRASES,
    answer_scores,
    citation_scores,
    exact_match,
    mean,
    mrr,
    ndcg_at_k,
    normalize_answer,
    parse_citations,
    recall_at_k,
    reference_text,
    says_cannot_find,
    token_f1,
)
from viz.eval.report import write_report

__all__ = [
    "CANNOT_FIND_PHRASES",
    "answer_scores",
    "citation_scores",
    "exact_match",
    "mean",
    "mrr",
    "ndcg_at_k",
    "normalize_answer",
    "parse_citations",
    "recall_at_k",
    "reference_text",
    "says_cannot_find",
    "token_f1",
    "write_report",
]
