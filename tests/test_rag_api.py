"""RAG through the OpenAI-compatible API: `viz.rag` grounds the answer, the response lists its
citations, and each cited document's owner is paid its per-citation price in the same event."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator

import openai
import pytest
from sqlalchemy import select

from viz.accounts import create_api_key, get_account
from viz.config import Settings
from viz.errors import NotFound
from viz.ledger import balances, topup
from viz.market.listings import list_document
from viz.rag.ingest import Selection, index_catalogue
from viz.store import open_database, session_scope
from viz.store.schema import UsageEvent
from worlds.catalogue import add_papers
from worlds.ledger import build_market
from worlds.serving import run_server, settled

PAPERS = ["1503.00841", "1601.02403"]
QUESTION = "Which regularization terms do they propose on top of generalized expectation?"
PRICE = 700  # per citation, micro-units


class World:
    def __init__(self, url: str, key: str, settings: Settings, database, documents) -> None:  # type: ignore[no-untyped-def]
        self.url, self.key, self.settings, self.database = url, key, settings, database
        self.documents = documents

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=self.key, max_retries=0)

    def posted(self, code: str) -> int:
        """The account's posted balance (0 before its first earning opens it)."""
        with settled(self.database) as session:
            try:
                return balances(session, code)[0].posted
            except NotFound:
                return 0


@pytest.fixture(scope="module")
def world(tmp_path_factory, models_dir, embedder, tiny_reranker) -> Iterator[World]:  # type: ignore[no-untyped-def]
    from viz.app import create_app

    home = tmp_path_factory.mktemp("rag-home")
    (home / "models").symlink_to(models_dir, target_is_directory=True)
    shutil.copytree(tiny_reranker, home / "rerankers" / "minilm-qasper")
    settings = Settings(home=home)
    database = open_database(settings.database_url_resolved)
    build_market(database)
    with session_scope(database) as session:
        ada = get_account(session, "ada")
        documents = add_papers(session, settings.blobs_dir, ada, PAPERS)
        for document_id in documents:
            list_document(session, document_id, price_per_citation_micro=PRICE, by=ada)
        index_catalogue(
            session,
            "papers",
            Selection(ids=tuple(documents)),
            home=settings.home,
            blobs_dir=settings.blobs_dir,
            embedder=embedder,
        )
        topup(session, "bob", 10_000_000, transfer_id="bob-funds")
        key = create_api_key(session, get_account(session, "bob")).token
    with run_server(create_app(settings, database)) as url:
        yield World(url, key, settings, database, documents)
    database.dispose()


def rag_ask(world: World, rag: dict, **options):  # type: ignore[no-untyped-def, type-arg]
    return world.client().chat.completions.create(
        model="smollm2-135m-instruct",
        messages=[{"role": "user", "content": QUESTION}],
        max_tokens=24,
        temperature=0,
        extra_body={"viz": {"rag": rag}},
        **options,
    )


def test_a_grounded_answer_lists_its_citations_and_pays_their_owners(world) -> None:
    before = world.posted("creator:ada")
    response = rag_ask(world, {"collection": "papers", "top_k": 3, "candidates": 0})
    extra = response.model_extra or {}
    assert extra["viz"]["rag"]["sources"] == 3
    citations = extra["citations"]
    cited_documents = sorted({c["document_id"] for c in citations})
    assert set(cited_documents) <= set(world.documents)
    for citation in citations:
        assert citation["licence"] == "CC-BY-4.0"
        assert citation["attribution"] == "Dasigi et al. 2021"
        assert f"[{citation['index']}]" in response.choices[0].message.content
    with settled(world.database) as session:
        event = session.scalar(select(UsageEvent).where(UsageEvent.request_id == response.id))
        assert event is not None
        assert sorted(json.loads(event.input_json)["citations"]) == cited_documents
    # Only citations are priced here (a base model is free): Ada gets them less the fee.
    fee = world.settings.platform_fee_bps
    assert (
        world.posted("creator:ada") - before
        == len(cited_documents) * PRICE * (10_000 - fee) // 10_000
    )


def test_streaming_sends_the_citations_before_done(world) -> None:
    stream = rag_ask(world, {"collection": "papers", "top_k": 2, "candidates": 0}, stream=True)
    text, citations = "", None
    for chunk in stream:
        extra = chunk.model_extra or {}
        if "citations" in extra:
            citations = extra["citations"]
        for choice in chunk.choices:
            text += choice.delta.content or ""
    assert citations is not None
    for citation in citations:
        assert f"[{citation['index']}]" in text


def test_a_reranked_request_and_the_cannot_find_path(world) -> None:
    response = rag_ask(world, {"collection": "papers", "top_k": 2, "candidates": 10})
    assert response.model_extra["viz"]["rag"]["sources"] == 2
    before = world.posted("consumer:bob")
    nothing = rag_ask(
        world,
        {"collection": "papers", "top_k": 2, "candidates": 10, "min_relevance": 0.999},
    )
    assert nothing.choices[0].message.content == "I can't find this in the sources."
    assert nothing.usage.completion_tokens == 0 and nothing.model_extra["citations"] == []
    assert world.posted("consumer:bob") == before, "nothing generated, nothing charged"


def test_bad_rag_options_get_openai_shaped_errors(world) -> None:
    client = world.client()
    for rag, status, message in [
        ({"collection": "nope"}, 404, "no collection 'nope'"),
        ({"collection": "papers", "top_k": 50}, 400, "top_k"),
        ({"collection": "papers", "top_k": 5, "candidates": 3}, 400, "candidates"),
        ({"collection": "papers", "mode": "fuzzy"}, 400, "mode"),
        ({"collection": "papers", "reranker": "llm"}, 400, "not served"),
        ({"collection": "../x"}, 400, "collection name"),
        ({"collection": "papers", "reranker": "/etc"}, 400, "name of a trained reranker"),
        ({"collection": "papers", "reranker": "nope"}, 404, "no reranker 'nope'"),
    ]:
        with pytest.raises(openai.APIStatusError) as refused:
            client.chat.completions.create(
                model="smollm2-135m-instruct",
                messages=[{"role": "user", "content": QUESTION}],
                max_tokens=4,
                extra_body={"viz": {"rag": rag}},
            )
        assert refused.value.status_code == status, rag
        assert message in refused.value.message, rag
        assert refused.value.code != "model_not_found", rag
    with pytest.raises(openai.APIStatusError) as refused:
        client.completions.create(
            model="smollm2-135m-instruct",
            prompt="x",
            max_tokens=4,
            extra_body={"viz": {"rag": {"collection": "papers"}}},
        )
    assert refused.value.status_code == 400 and "chat completions" in refused.value.message
    unauthenticated = openai.OpenAI(base_url=f"{world.url}/v1", api_key="viz_wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        unauthenticated.chat.completions.create(
            model="smollm2-135m-instruct",
            messages=[{"role": "user", "content": QUESTION}],
            extra_body={"viz": {"rag": {"collection": "papers"}}},
        )
