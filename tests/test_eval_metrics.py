"""Answer, retrieval and citation metrics on hand-worked examples, and the report writer."""

import csv
import json
import math

import pytest

from viz.eval import (
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
    write_report,
)
from viz.rag.citations import CANNOT_FIND_PHRASES, parse_citations

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# QASPER answer annotations, in the shape of /work/shared/data/qasper-dev/questions.json.
YES = {"unanswerable": False, "yes_no": True, "free_form_answer": "", "extractive_spans": []}
NO = {"unanswerable": False, "yes_no": False, "free_form_answer": "", "extractive_spans": []}
NONE = {"unanswerable": True, "yes_no": None, "free_form_answer": "", "extractive_spans": []}
SPANS = {
    "unanswerable": False,
    "yes_no": None,
    "free_form_answer": "",
    "extractive_spans": ["BIBREF19", "BIBREF20"],
}
FREE = {
    "unanswerable": False,
    "yes_no": None,
    "free_form_answer": "a cat on a rug",
    "extractive_spans": [],
}


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("The  Cat, sat!", "cat sat"),
        ("An apple a day", "apple day"),
        ("theory of an atom", "theory of atom"),  # "the" inside a word stays
        ("  BERT-base (uncased).  ", "bertbase uncased"),
        ("", ""),
    ],
)
def test_normalize_answer_follows_squad(raw, normalised):
    assert normalize_answer(raw) == normalised


def test_token_f1_of_partial_overlap():
    # "cat sat on mat" vs "cat on": overlap 2, precision 2/4, recall 2/2, F1 = 2/3.
    assert token_f1("The cat sat on the mat.", "a cat, on") == pytest.approx(2 / 3)
    assert token_f1("cat sat on mat", "cat lay on rug") == pytest.approx(0.5)
    assert token_f1("dog", "cat") == 0.0
    assert token_f1("the", "a") == 1.0  # both empty after normalisation
    assert token_f1("cat", "") == 0.0


def test_exact_match_ignores_case_punctuation_and_articles():
    assert exact_match("The BERT model.", "bert model") == 1.0
    assert exact_match("BERT", "RoBERTa") == 0.0


def test_reference_text_matches_the_official_evaluator():
    assert reference_text(YES) == "Yes"
    assert reference_text(NO) == "No"
    assert reference_text(NONE) == "Unanswerable"
    assert reference_text(SPANS) == "BIBREF19, BIBREF20"
    assert reference_text(FREE) == "a cat on a rug"


def test_yes_no_prediction_is_judged_by_its_first_word():
    assert answer_scores("Yes, they fine-tune BERT [2].", [YES]) == (1.0, 1.0)
    assert answer_scores("No. The paper uses GloVe.", [YES]) == (0.0, 0.0)
    # Against a span reference the whole prediction counts, so "yes" earns nothing there.
    # "yes bibref19" vs "bibref19 bibref20": overlap 1, precision 1/2, recall 1/2.
    assert answer_scores("Yes, BIBREF19", [SPANS]) == (0.0, 0.5)


def test_cannot_find_prediction_counts_as_unanswerable():
    assert "cannot find" in CANNOT_FIND_PHRASES
    assert answer_scores("I can\u2019t find the answer in the sources.", [NONE]) == (1.0, 1.0)
    assert answer_scores("The answer is NOT IN THE SOURCES.", [NONE]) == (1.0, 1.0)
    assert answer_scores("I cannot find it.", [FREE]) == (0.0, 0.0)
    assert answer_scores("It is unanswerable", [YES]) == (0.0, 0.0)


def test_answer_scores_take_the_best_over_the_references():
    # "bibref19 and bibref20" vs the spans "bibref19 bibref20": precision 2/3, recall 1,
    # F1 0.8; the free-form reference alone would give 0.
    assert answer_scores("BIBREF19 and BIBREF20", [FREE]) == (0.0, 0.0)
    exact, f1 = answer_scores("BIBREF19 and BIBREF20", [FREE, SPANS, NONE])
    assert exact == 0.0
    assert f1 == pytest.approx(0.8)
    # "cat on rug" equals the free-form "a cat on a rug" once normalised.
    assert answer_scores("A cat on the rug", [NO, FREE]) == (1.0, 1.0)


def test_retrieval_metrics_on_a_hand_computed_ranking():
    ranked, relevant = [3, 1, 2], {1, 2}
    assert recall_at_k(ranked, relevant, 1) == 0.0
    assert recall_at_k(ranked, relevant, 2) == 0.5
    assert recall_at_k(ranked, relevant, 10) == 1.0
    assert mrr(ranked, relevant) == 0.5
    expected = (1 / math.log2(3) + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    assert ndcg_at_k(ranked, relevant, 10) == pytest.approx(expected)
    assert ndcg_at_k([1, 2, 3], relevant, 10) == pytest.approx(1.0)


def test_retrieval_metrics_when_nothing_is_found_or_nothing_is_relevant():
    assert mrr([5, 6], {1}) == 0.0
    assert ndcg_at_k([5, 6], {1}, 10) == 0.0
    assert recall_at_k([5, 6], set(), 5) is None
    assert mrr([5, 6], set()) is None
    assert ndcg_at_k([5, 6], set(), 10) is None
    # A relevant chunk ranked twice counts once.
    assert ndcg_at_k([1, 1], {1, 2}, 2) == pytest.approx(1 / (1 + 1 / math.log2(3)))


def test_citation_scores_and_mean():
    assert citation_scores([1, 3], {1, 2}) == (0.5, 0.5)
    assert citation_scores([], {1}) == (None, 0.0)
    assert citation_scores([2], set()) == (0.0, None)
    assert mean([1.0, None, 0.0]) == 0.5
    assert mean([None, None]) is None
    assert mean([]) is None


@pytest.mark.parametrize(
    ("answer", "cited"),
    [
        ("BERT [2] beats ELMo [1].", [2, 1]),
        ("Both papers agree [1, 2].", [1, 2]),
        ("Both papers agree [1,3][2].", [1, 3, 2]),
        ("See [2], and again [2] and [1][2].", [2, 1]),
        ("Out of range [7] and [0] are dropped [3].", [3]),
        ("No markers, just [a] and [] and [1.5].", []),
    ],
)
def test_parse_citations(answer, cited):
    assert parse_citations(answer, n_sources=5) == cited


def _cell(cell, method, chunk_chars=None, candidates=None, top_k=None, **metrics):
    return {
        "cell": cell,
        "method": method,
        "chunk_chars": chunk_chars,
        "candidates": candidates,
        "top_k": top_k,
        **metrics,
        "questions": 20,
    }


CELLS = [
    _cell("vanilla", "vanilla", f1=0.2, exact_match=0.05, recall_at_k=None),
    _cell("rag-c800-k5", "rag", 800, None, 5, f1=0.3, recall_at_k=0.6, mrr=0.5),
    _cell("rag-c1200-k5", "rag", 1200, None, 5, f1=None, recall_at_k=0.7),
    _cell("rar-c1200-n20-k5", "rar", 1200, 20, 5, f1=0.4, recall_at_k=0.8, ended_cleanly=1.0),
    _cell("rar-c1200-n40-k3", "rar", 1200, 40, 3, f1=0.35, recall_at_k=None),
]


def test_report_writes_every_file_and_escapes_the_title(tmp_path):
    meta = {"title": "QASPER <script>alert(1)</script>", "model": "smollm2", "sample": 20}
    written = write_report(tmp_path / "report", CELLS, meta)

    assert set(written) == {
        "results.json",
        "results.csv",
        "report.md",
        "report.html",
        "f1_by_chunk_size.png",
        "by_top_k.png",
        "by_candidates.png",
    }
    for path in written.values():
        assert path.exists()
        if path.suffix == ".png":
            assert path.read_bytes().startswith(PNG_MAGIC)

    with written["results.csv"].open(newline="") as file:
        rows = list(csv.DictReader(file))
    assert [row["cell"] for row in rows] == [cell["cell"] for cell in CELLS]
    assert rows[2]["f1"] == ""

    assert json.loads(written["results.json"].read_text())["meta"]["sample"] == 20

    html = written["report.html"].read_text()
    assert "<script>" not in html
    assert "&lt;script&gt;" in html
    assert '<img src="by_candidates.png"' in html

    markdown = written["report.md"].read_text()
    assert "| rag-c1200-k5 | rag | 1200 | – | 5 | 0.700 |" in markdown
    assert "F1: 0.400 (rar-c1200-n20-k5)" in markdown
    assert "best retrieving F1 / vanilla F1: 2.00x" in markdown


def test_report_of_a_vanilla_only_run_has_tables_but_no_plots(tmp_path):
    written = write_report(tmp_path, CELLS[:1], {"title": "sample run"})

    assert set(written) == {"results.json", "results.csv", "report.md", "report.html"}
    assert not list(tmp_path.glob("*.png"))
    assert "<img" not in written["report.html"].read_text()
    assert "F1: 0.200 (vanilla)" in written["report.md"].read_text()
