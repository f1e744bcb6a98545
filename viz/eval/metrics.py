"""Scores for one experiment cell: answer quality, retrieval quality and citation quality.

Everything here is a pure function over strings, lists and sets, so a run can be re-scored
from its saved predictions without loading a model.

Answers follow SQuAD and the official QASPER evaluator:

- `normalize_answer` lower-cases, drops punctuation, drops the articles a/an/the and collapses
  whitespace. `exact_match` and `token_f1` compare normalised strings; two answers that are
  both empty after normalisation score 1.0.
- `reference_text` turns one QASPER answer annotation into the string the official evaluator
  scores against: "Unanswerable", then the extractive spans joined with ", ", then the free-form
  answer, then "Yes"/"No". QASPER v0.3 guarantees exactly one of these is set, so the order
  only matters for malformed data.
- `answer_scores` takes the best exact match and the best F1 over all reference annotations of
  a question (each maximised separately, as the official evaluator does). Before comparing, a
  prediction is mapped in two ways that a generative model needs and an extractive one did not:

  1. A prediction that says it cannot find the answer (it contains one of
     `CANNOT_FIND_PHRASES`, case-insensitive) becomes "Unanswerable" for every reference.
  2. Otherwise, if the normalised prediction starts with "yes" or "no", it is compared against
     a yes/no reference by that first word only: "Yes, they use BERT [2]" matches "Yes".
     Against other references the full prediction is used.

Retrieval metrics take the ranked chunk ids a retriever returned and the set of chunk ids that
hold the evidence. They return None when nothing is relevant (the question has no evidence in
the index), so `mean` can skip those questions instead of counting them as zeros.

Citation metrics take the source numbers an answer cited ("[2]" is the second source in the
prompt, counting from 1) and the source numbers that were relevant. Citation parsing itself
(`parse_citations`, `says_cannot_find`, `CANNOT_FIND_PHRASES`) lives in `viz.rag.citations`,
which decides what a grounded answer pays for, so scores and payments use the same rules.
"""

import math
import re
import string
from collections import Counter
from collections.abc import Collection, Hashable, Iterable, Sequence
from typing import Any

from viz.rag.citations import says_cannot_find

UNANSWERABLE = "Unanswerable"

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(s: str) -> str:
    """SQuAD normalisation: lower case, no punctuation, no articles, single spaces.

    Example: "The  Cat, sat!" -> "cat sat".
    """
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCTUATION)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def exact_match(prediction: str, reference: str) -> float:
    """1.0 if the two answers are equal after `normalize_answer`, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(reference))


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD token F1: harmonic mean of token precision and recall, tokens counted with
    multiplicity. Both empty after normalisation scores 1.0; one empty scores 0.0."""
    prediction_tokens = normalize_answer(prediction).split()
    reference_tokens = normalize_answer(reference).split()
    if not prediction_tokens and not reference_tokens:
        return 1.0
    common = Counter(prediction_tokens) & Counter(reference_tokens)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision = overlap / len(prediction_tokens)
    recall = overlap / len(reference_tokens)
    return 2 * precision * recall / (precision + recall)


def reference_text(answer: dict[str, Any]) -> str:
    """The string the official QASPER evaluator scores against for one answer annotation."""
    if answer.get("unanswerable"):
        return UNANSWERABLE
    spans = answer.get("extractive_spans") or []
    if spans:
        return ", ".join(spans)
    free_form = answer.get("free_form_answer") or ""
    if free_form:
        return free_form
    yes_no = answer.get("yes_no")
    if yes_no is True:
        return "Yes"
    if yes_no is False:
        return "No"
    return ""


def answer_scores(prediction: str, answers: list[dict[str, Any]]) -> tuple[float, float]:
    """(exact match, token F1) of a prediction, each the best over the reference annotations.

    See the module docstring for how "cannot find" and yes/no predictions are mapped.
    """
    assert answers, "a question needs at least one reference answer"
    if says_cannot_find(prediction):
        prediction = UNANSWERABLE
    words = normalize_answer(prediction).split()
    first_word = words[0] if words else ""
    best_exact, best_f1 = 0.0, 0.0
    for answer in answers:
        reference = reference_text(answer)
        compared = prediction
        if answer.get("yes_no") is not None and first_word in ("yes", "no"):
            compared = first_word
        best_exact = max(best_exact, exact_match(compared, reference))
        best_f1 = max(best_f1, token_f1(compared, reference))
    return best_exact, best_f1


def recall_at_k(ranked: Sequence[Hashable], relevant: Collection[Hashable], k: int) -> float | None:
    """Fraction of the relevant ids found in the top k; None if nothing is relevant."""
    assert k > 0, f"k must be positive, got {k}"
    if not relevant:
        return None
    found = set(ranked[:k]) & set(relevant)
    return len(found) / len(set(relevant))


def mrr(ranked: Sequence[Hashable], relevant: Collection[Hashable]) -> float | None:
    """Reciprocal rank of the first relevant id (ranks count from 1), 0.0 if none is ranked;
    None if nothing is relevant."""
    if not relevant:
        return None
    for rank, chunk_id in enumerate(ranked, start=1):
        if chunk_id in relevant:
            return 1.0 / rank
    return 0.0


def ndcg_at_k(ranked: Sequence[Hashable], relevant: Collection[Hashable], k: int) -> float | None:
    """nDCG@k with binary gains and a log2(rank + 1) discount; None if nothing is relevant.

    A relevant id ranked twice counts once, so a retriever cannot score above 1.0 by repeating.
    """
    assert k > 0, f"k must be positive, got {k}"
    if not relevant:
        return None
    relevant_set = set(relevant)
    seen: set[Hashable] = set()
    dcg = 0.0
    for index, chunk_id in enumerate(ranked[:k]):
        if chunk_id in relevant_set and chunk_id not in seen:
            seen.add(chunk_id)
            dcg += 1.0 / math.log2(index + 2)
    ideal = sum(1.0 / math.log2(index + 2) for index in range(min(k, len(relevant_set))))
    return dcg / ideal


def citation_scores(cited: list[int], relevant: set[int]) -> tuple[float | None, float | None]:
    """(precision, recall) of the cited source numbers.

    Precision is the fraction of distinct cited sources that are relevant, None if nothing was
    cited. Recall is the fraction of relevant sources cited, None if nothing is relevant.
    """
    cited_set = set(cited)
    precision = len(cited_set & relevant) / len(cited_set) if cited_set else None
    recall = len(cited_set & relevant) / len(relevant) if relevant else None
    return precision, recall


def mean(values: Iterable[float | None]) -> float | None:
    """Arithmetic mean of the values that are not None; None if there are none."""
    present = [value for value in values if value is not None]
    if not present:
        return None
    return sum(present) / len(present)
