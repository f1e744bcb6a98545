"""Evaluation of answers with and without retrieval: SQuAD/QASPER answer scores, retrieval
and citation metrics (`metrics`), the experiment report writer (`report`), the RAG grid
(`rag`) and the routing evaluation (`routing`). Citation parsing is `viz.rag.citations`; the
QASPER reader is `viz.datasets.qasper`."""

from viz.eval.metrics import (
    answer_scores,
    citation_scores,
    exact_match,
    mean,
    mrr,
    ndcg_at_k,
    normalize_answer,
    recall_at_k,
    reference_text,
    token_f1,
)
from viz.eval.report import write_report

__all__ = [
    "answer_scores",
    "citation_scores",
    "exact_match",
    "mean",
    "mrr",
    "ndcg_at_k",
    "normalize_answer",
    "recall_at_k",
    "reference_text",
    "token_f1",
    "write_report",
]
