"""`viz eval routing`: how QASPER papers are grouped into sub-domains and split into training
papers and held-out queries (the training and the scoring run in `bench/results/routing`)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from viz.cli import app
from viz.errors import InvalidInput
from viz.eval.routing import english_texts, plan_hierarchy, subdomain_of
from worlds.catalogue import SHARED, qasper_subset


def test_a_title_names_one_sub_domain_or_none() -> None:
    assert subdomain_of("Unsupervised Neural Machine Translation") == "translation"
    assert subdomain_of("A Dataset for Reading Comprehension") == "question-answering"
    assert subdomain_of("Sarcasm Detection in Tweets") == "sentiment"
    assert subdomain_of("End-to-end Dialogue State Tracking") == "dialogue"
    assert subdomain_of("Translating Questions into SQL") is None, "two rules: left out"
    assert subdomain_of("Robustly Leveraging Prior Knowledge in Text Classification") is None


def test_the_plan_trains_on_train_papers_and_queries_held_out_dev_papers() -> None:
    train, dev = SHARED / "data" / "qasper-train", SHARED / "data" / "qasper-dev"
    plan = plan_hierarchy(train, dev, english_texts(SHARED), papers_per_subdomain=3)
    assert set(plan.subdomains) == {"translation", "question-answering", "sentiment", "dialogue"}
    trained = {p.stem for papers in plan.subdomains.values() for p in papers}
    trained |= {p.stem for p in plan.domain}
    assert all(len(papers) == 3 for papers in plan.subdomains.values())
    assert len(trained) == 4 * 3 + 16 and all(p.is_file() for p in plan.domain)
    assert not trained & {q.paper_id for q, _ in plan.queries}, "queries come from unseen papers"
    assert len(plan.queries) > 200
    assert all(subdomain_of(q.paper_title) == label for q, label in plan.queries)
    assert plan.english[0].name == "general_sample.txt" and len(plan.english) == 4
    again = plan_hierarchy(train, dev, english_texts(SHARED), papers_per_subdomain=3)
    assert again.subdomains == plan.subdomains, "the same seed, the same papers"


def test_too_few_papers_or_no_question_set_is_refused(tmp_path: Path) -> None:
    small = qasper_subset(tmp_path / "small", "qasper-train", 5)
    with pytest.raises(InvalidInput, match="too few training papers"):
        plan_hierarchy(small, small, ())
    result = CliRunner().invoke(
        app, ["--home", str(tmp_path), "eval", "routing", "--train", str(tmp_path / "nope")]
    )
    assert result.exit_code == 2 and "has no questions.json" in result.output
