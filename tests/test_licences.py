"""Which licences let a base be pretrained on a text and then redistributed, per SPDX id, and
the licence such a base must carry (issue 23: provenance by construction)."""

from __future__ import annotations

import pytest

from viz.accounts import create_account
from viz.documents import DocumentInput, add_documents
from viz.errors import InvalidInput
from viz.licences import base_licence, pretraining_terms
from viz.store import session_scope
from viz.training.corpus import admit_for_pretraining
from worlds.catalogue import QASPER_PAPERS

# id -> (admitted, attribution, share-alike, non-commercial)
TERMS = {
    "CC0-1.0": (True, False, False, False),
    "PDDL-1.0": (True, False, False, False),
    "Unlicense": (True, False, False, False),
    "CC-BY-4.0": (True, True, False, False),
    "CC-BY-3.0": (True, True, False, False),
    "MIT": (True, True, False, False),
    "Apache-2.0": (True, True, False, False),
    "BSD-3-Clause": (True, True, False, False),
    "ISC": (True, True, False, False),
    "ODC-By-1.0": (True, True, False, False),
    "CC-BY-SA-4.0": (True, True, True, False),
    "ODbL-1.0": (True, True, True, False),
    "GPL-3.0-only": (True, True, True, False),
    "GFDL-1.3-or-later": (True, True, True, False),
    "CC-BY-NC-4.0": (True, True, False, True),
    "CC-BY-NC-SA-4.0": (True, True, True, True),
    "CC-BY-ND-4.0": (False, False, False, False),
    "CC-BY-NC-ND-4.0": (False, False, False, False),
    "LicenseRef-Proprietary": (False, False, False, False),
    "LicenseRef-All-Rights-Reserved": (False, False, False, False),
    "NOASSERTION": (False, False, False, False),
    "Elastic-2.0": (False, False, False, False),  # source-available, not open
}


@pytest.mark.parametrize("licence", TERMS)
def test_each_licence_is_admitted_or_refused_with_the_terms_it_passes_on(licence) -> None:
    terms = pretraining_terms(licence)
    admitted, attribution, share_alike, non_commercial = TERMS[licence]
    assert (terms.admitted, terms.attribution, terms.share_alike, terms.non_commercial) == (
        admitted,
        attribution,
        share_alike,
        non_commercial,
    )
    assert bool(terms.reason) != admitted  # a refusal always says why
    if "ND" in licence:
        assert "NoDerivatives" in terms.reason


def test_expressions_take_the_most_permissive_choice_and_combine_all_parts() -> None:
    assert pretraining_terms("CC-BY-ND-4.0 OR MIT").admitted
    assert not pretraining_terms("CC-BY-ND-4.0 OR LicenseRef-Mine").admitted
    either = pretraining_terms("CC-BY-SA-4.0 OR CC-BY-4.0")
    assert either.admitted and not either.share_alike
    both = pretraining_terms("CC-BY-SA-4.0 AND CC-BY-NC-4.0")
    assert both.share_alike and both.non_commercial
    assert not pretraining_terms("MIT AND CC-BY-ND-4.0").admitted


def test_the_base_licence_carries_share_alike_and_non_commercial_terms() -> None:
    open_ = [pretraining_terms(i) for i in ("CC-BY-4.0", "MIT")]
    assert base_licence(open_) == "CC-BY-4.0"
    assert base_licence([pretraining_terms("CC0-1.0")]) == "CC0-1.0"
    assert base_licence(open_, chosen="apache-2.0") == "Apache-2.0"
    shared = [*open_, pretraining_terms("CC-BY-SA-4.0")]
    assert base_licence(shared) == "CC-BY-SA-4.0"
    with pytest.raises(InvalidInput, match="share-alike"):
        base_licence(shared, chosen="MIT")
    restricted = [*open_, pretraining_terms("CC-BY-NC-4.0")]
    assert base_licence(restricted) == "CC-BY-NC-4.0"
    with pytest.raises(InvalidInput, match="non-commercial"):
        base_licence(restricted, chosen="CC-BY-4.0")


def test_a_pretraining_corpus_admits_document_by_document_and_names_each_refusal(
    sqlite_engine, tmp_path
) -> None:
    papers = sorted(QASPER_PAPERS.glob("*.txt"))[:6]
    limits = {"document_bytes_max": 10_000_000, "documents_max": 100}
    cc_by = DocumentInput("CC-BY-4.0", attribution="Dasigi et al. 2021, CC BY 4.0", tags=("q",))
    with session_scope(sqlite_engine) as session:
        ada, bob = create_account(session, "ada"), create_account(session, "bob")
        add_documents(session, tmp_path, ada, papers[:3], cc_by, **limits)
        add_documents(
            session,
            tmp_path,
            ada,
            papers[3:4],
            DocumentInput("CC-BY-ND-4.0", tags=("q",)),
            **limits,
        )
        no_training = DocumentInput("MIT", ai_training="notAllowed", tags=("q",))
        add_documents(session, tmp_path, ada, papers[4:5], no_training, **limits)
        add_documents(
            session, tmp_path, bob, papers[5:6], DocumentInput("MIT", tags=("q",)), **limits
        )

        corpus = admit_for_pretraining(session, ada, tags=["q"])

        assert [document.id for document, _ in corpus.admitted] == [1, 2, 3]
        reasons = {refused.document_id: refused.reason for refused in corpus.refused}
        assert "NoDerivatives" in reasons[4]
        assert "notAllowed" in reasons[5]
        assert "belongs to bob" in reasons[6]
        assert corpus.licence() == "CC-BY-4.0"
        assert corpus.attributions() == ["Dasigi et al. 2021, CC BY 4.0"] * 3
        with pytest.raises(InvalidInput, match="no document can be pretrained on"):
            admit_for_pretraining(session, ada, document_ids=[4, 5])
