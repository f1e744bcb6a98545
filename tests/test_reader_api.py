"""The grounded reader in the API: a `viz.rag` request composes the catalogue's reader adapter
after its model by default (metered, its creator paid per token like any adapter's); `reader:
"none"` leaves it out, a named reader that does not exist is a 404, and a plain request never
gets it."""

from __future__ import annotations

import json
from collections.abc import Iterator

import openai
import pytest
from sqlalchemy import select

from viz.accounts import create_api_key, get_account
from viz.api import find_reader
from viz.config import Settings
from viz.errors import NotFound
from viz.ledger import balances, topup
from viz.rag.ingest import Selection, index_catalogue
from viz.store import open_database, session_scope
from viz.store.schema import UsageEvent
from worlds.catalogue import add_papers
from worlds.ledger import build_market
from worlds.serving import make_adapter, register, run_server, settled

QUESTION = "Which regularization terms do they propose on top of generalized expectation?"


@pytest.fixture(scope="module")
def world(tmp_path_factory, models_dir, embedder, smollm2_folder) -> Iterator[tuple]:  # type: ignore[no-untyped-def, type-arg]
    from viz.app import create_app

    home = tmp_path_factory.mktemp("reader-home")
    (home / "models").symlink_to(models_dir, target_is_directory=True)
    settings = Settings(home=home)
    database = open_database(settings.database_url_resolved)
    build_market(database)
    reader = make_adapter(smollm2_folder, home / "reader-folder", seed=3)
    with session_scope(database) as session:
        ada = get_account(session, "ada")
        documents = add_papers(session, settings.blobs_dir, ada, ["1503.00841"])
        index_catalogue(
            session,
            "papers",
            Selection(ids=tuple(documents)),
            home=settings.home,
            blobs_dir=settings.blobs_dir,
            embedder=embedder,
        )
        register(session, settings.blobs_dir, reader, "reader", "carol", price_out=1000)
        topup(session, "bob", 10_000_000, transfer_id="bob-funds")
        key = create_api_key(session, get_account(session, "bob")).token
    with run_server(create_app(settings, database)) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)
        yield client, database, settings, reader
    database.dispose()


def ask(client: openai.OpenAI, rag: dict | None):  # type: ignore[no-untyped-def, type-arg]
    extra = {"viz": {"rag": rag}} if rag is not None else {}
    return client.chat.completions.create(
        model="smollm2-135m-instruct",
        messages=[{"role": "user", "content": QUESTION}],
        max_tokens=8,
        temperature=0,
        extra_body=extra,
    )


def composition(database, request_id: str) -> list[str]:  # type: ignore[no-untyped-def]
    with settled(database) as session:
        event = session.scalar(select(UsageEvent).where(UsageEvent.request_id == request_id))
        assert event is not None, "the request was metered"
        return [adapter for adapter, _, _ in json.loads(event.input_json)["composition"]]


def test_a_rag_request_reads_with_the_catalogues_reader_and_pays_its_creator(world) -> None:
    client, database, _, _ = world
    response = ask(client, {"collection": "papers", "top_k": 2, "candidates": 0})
    assert response.model.startswith("reader@"), response.model
    assert composition(database, response.id) == ["reader"]
    with settled(database) as session:  # carol, the reader's creator, earned its royalty
        earned = balances(session, "creator:carol")[0].posted
    assert earned > 0


def test_none_leaves_the_reader_out_and_a_plain_request_never_gets_it(world) -> None:
    client, database, _, _ = world
    response = ask(client, {"collection": "papers", "top_k": 2, "candidates": 0, "reader": "none"})
    assert response.model == "smollm2-135m-instruct"
    assert composition(database, response.id) == []
    plain = ask(client, None)
    assert plain.model == "smollm2-135m-instruct"


def test_a_named_reader_that_is_not_in_the_catalogue_is_a_404(world) -> None:
    client, _, _, _ = world
    with pytest.raises(openai.NotFoundError, match="no-such-reader"):
        ask(
            client,
            {"collection": "papers", "top_k": 2, "candidates": 0, "reader": "no-such-reader"},
        )


def test_viz_ask_merges_the_published_reader_of_its_base(world) -> None:
    _, database, settings, reader = world
    base = "smollm2-135m-instruct"
    with session_scope(database) as session:
        folder = find_reader(session, settings, base, "default")
        assert find_reader(session, settings, base, "none") is None
        assert find_reader(session, settings, "another-base", "default") is None
        with pytest.raises(NotFound, match="no-such-reader"):
            find_reader(session, settings, base, "no-such-reader")
    assert folder is not None  # written once from the catalogue's blobs
    published = (folder / "adapter_model.safetensors").read_bytes()
    assert published == (reader / "adapter_model.safetensors").read_bytes()
