"""Routing, part 3: the hierarchy, domain profiles, the recommender, `viz recommend`, `viz market
tree`, and `model: "auto"` in the API, on a small real hierarchy over the default model:

    english -> nlp-research -> translation | question-answering | sentiment
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, replace

import openai
import pytest
import torch
from sqlalchemy import select
from typer.testing import CliRunner

from viz.accounts import create_account, create_api_key, get_account
from viz.cli import app
from viz.config import Settings
from viz.errors import InvalidInput
from viz.ledger import topup
from viz.models.registry import ensure_builtin_models
from viz.routing.hardware import PRESETS, parse_hardware
from viz.routing.hierarchy import adapter_tree, render_tree, walk
from viz.routing.match import match_query
from viz.routing.options import RouteRequest
from viz.routing.profiles import build_profile
from viz.routing.recommend import recommend
from viz.routing.speed import Calibration, estimate_speed
from viz.serving.engines.builtin.calibrate import calibrate
from viz.store import open_database, session_scope
from viz.store.schema import Adapter, AdapterTag, AdapterVersion, Document, UsageEvent
from worlds.catalogue import add_papers
from worlds.serving import make_adapter, register, run_server, settled

BASE = "smollm2-135m-instruct"
CHAIN = "english@1.0.0:0.25+nlp-research@1.0.0:0.5+translation@1.0.0:1"
MT_QUESTION = "How is BLEU computed for the German-English neural machine translation model?"
HIERARCHY = [  # name, parent, description, tags
    ("english", None, "general English prose and everyday writing", ("english",)),
    ("nlp-research", "english", "natural language processing research papers", ("nlp",)),
    ("translation", "nlp-research", "machine translation: NMT, BLEU, parallel corpora", ("mt",)),
    (
        "question-answering",
        "nlp-research",
        "question answering and reading comprehension datasets",
        ("qa",),
    ),
    ("sentiment", "nlp-research", "sentiment analysis, emotion and sarcasm detection", ("nlp",)),
]


@dataclass
class World:
    settings: Settings
    database: object
    embedder: object
    documents: list[int]

    def session(self):  # type: ignore[no-untyped-def]
        return session_scope(self.database)  # type: ignore[arg-type]

    def recommend(self, query: str = MT_QUESTION, hardware: str = "workstation-64gb", **fields):  # type: ignore[no-untyped-def]
        with self.session() as session:
            return recommend(
                session,
                RouteRequest(query, parse_hardware(hardware), **fields),
                embedder=self.embedder,
                calibration=None,
                blobs_dir=self.settings.blobs_dir,
                models_dir=self.settings.models_dir,
                default_base=self.settings.default_base_model,
            )


@pytest.fixture(scope="module")
def world(tmp_path_factory, models_dir, smollm2_folder, embedder) -> Iterator[World]:  # type: ignore[no-untyped-def]
    home = tmp_path_factory.mktemp("routing-home")
    (home / "models").symlink_to(models_dir, target_is_directory=True)
    settings = Settings(home=home)
    database = open_database(settings.database_url_resolved)
    folders = [make_adapter(smollm2_folder, home / f"lora-{i}", seed=i) for i in range(2)]
    with session_scope(database) as session:
        ensure_builtin_models(session)
        for name in ("ai2", "ada", "eve"):
            create_account(session, name)
        documents = add_papers(
            session, settings.blobs_dir, get_account(session, "ai2"), ["1503.00841"]
        )
        for index, (name, parent, description, tags) in enumerate(HIERARCHY):
            version_id = register(
                session,
                settings.blobs_dir,
                folders[index % 2],
                name,
                "ai2",
                price_in=10 * (index + 1),
                price_out=30 * (index + 1),
            )
            version = session.get(AdapterVersion, version_id)
            adapter = version.adapter
            adapter.description = description
            adapter.tags = [AdapterTag(tag=t) for t in tags]
            if parent:
                adapter.parent = session.scalar(select(Adapter).where(Adapter.name == parent))
            version.size_bytes = (folders[index % 2] / "adapter_model.safetensors").stat().st_size
        # eve's private adapter and a pending one are never in anyone else's tree.
        register(session, settings.blobs_dir, folders[0], "eve-secret", "eve", visibility="private")
        register(session, settings.blobs_dir, folders[1], "unscreened", "ai2", status="pending")
        topup(session, "ada", 10_000_000, transfer_id="ada-funds")
    yield World(settings, database, embedder, documents)
    database.dispose()


# --- the hierarchy ------------------------------------------------------------------------------


def test_the_tree_shows_levels_prices_and_only_what_the_caller_may_use(world) -> None:
    with world.session() as session:
        drawn = render_tree(BASE, adapter_tree(session, BASE))
        eve = get_account(session, "eve")
        names = {n.name for n in walk(adapter_tree(session, BASE, caller=eve))}
    assert drawn.splitlines()[0] == f"{BASE} (base)"
    assert "└── english@1.0.0 [language]  10/30 per 1k in/out" in drawn
    assert "    └── nlp-research@1.0.0 [domain]" in drawn
    assert "        ├── question-answering@1.0.0 [sub-domain]" in drawn
    assert "        └── translation@1.0.0 [sub-domain]" in drawn  # children sorted by name
    assert "eve-secret" not in drawn and "unscreened" not in drawn
    assert "eve-secret" in names, "an owner sees their private adapter"


def test_viz_market_tree_draws_the_hierarchy(world) -> None:
    result = CliRunner().invoke(app, ["--home", str(world.settings.home), "market", "tree"])
    assert result.exit_code == 0, result.output
    assert "translation@1.0.0 [sub-domain]" in result.output
    missing = CliRunner().invoke(app, ["--home", str(world.settings.home), "market", "tree", "x"])
    assert missing.exit_code == 3 and "error:" in missing.output


# --- domain profiles ----------------------------------------------------------------------------


def test_a_profile_is_the_centroid_of_the_training_documents_and_the_card(world) -> None:
    def profile(session, version):  # type: ignore[no-untyped-def]
        data = build_profile(session, version, world.settings.blobs_dir, world.embedder)
        return torch.frombuffer(bytearray(data), dtype=torch.float32)

    with world.session() as session:
        version = session.scalar(
            select(AdapterVersion).join(Adapter).where(Adapter.name == "sentiment")
        )
        card_only = profile(session, version)
        assert version.profile_source.startswith("card only")
        paper_sha = session.get(Document, world.documents[0]).sha256
        version.manifest_json = json.dumps(  # a paper of the catalogue and one that is not
            {"documents": [{"sha256": s, "split": "train"} for s in (paper_sha, "0" * 64)]}
        )
        with_documents = profile(session, version)
        assert version.profile_source.startswith("12 chunks of 1 training document")
        topic = "Prior knowledge in text classification: regularization terms"
        paper = world.embedder.encode([topic])[0]
        assert float(with_documents.norm()) == pytest.approx(1.0, abs=1e-4)
        assert float(paper @ with_documents) > float(paper @ card_only), "the paper pulls it"
        version.manifest_json, version.profile = "", None  # back to the card, for the tests below
        build_profile(session, version, world.settings.blobs_dir, world.embedder)


# --- the domain match ---------------------------------------------------------------------------


def test_the_walk_goes_down_only_while_confident(world) -> None:
    with world.session() as session:
        roots = adapter_tree(session, BASE)
        nodes = {n.name: n for n in walk(roots)}
        axis = {name: torch.eye(8)[i] for i, name in enumerate(nodes)}
        vectors = {n.version.id: axis[n.name] for n in nodes.values()}

        def walk_for(**weights: float):  # type: ignore[no-untyped-def]
            query = sum((w * axis[name] for name, w in weights.items()), torch.zeros(8))
            return match_query(query, roots, vectors, min_score=0.1, min_margin=0.05)

        deep = walk_for(english=0.5, **{"nlp-research": 0.5, "translation": 0.6, "sentiment": 0.2})
        assert [level.name for level in deep.path] == ["english", "nlp-research", "translation"]
        assert deep.path[2].margin == pytest.approx(0.4) and deep.stopped == "reached a leaf"
        tie = walk_for(english=0.5, **{"nlp-research": 0.5, "translation": 0.4, "sentiment": 0.38})
        assert [level.name for level in tie.path] == ["english", "nlp-research"]
        assert "tie" in tie.stopped and "translation" in tie.stopped
        weak = walk_for(english=0.05, translation=0.9)
        assert weak.path == () and "0.050 < 0.1" in weak.stopped


def test_a_translation_question_is_routed_to_the_translation_chain(world) -> None:
    found = world.recommend()
    assert [level.name for level in found.choice.chain] == [
        "english",
        "nlp-research",
        "translation",
    ]
    assert found.choice.model == CHAIN  # the deepest level at 1, halving upwards
    assert [level.weight for level in found.choice.chain] == [0.25, 0.5, 1.0]
    # 10 x 0.25 + 20 x 0.5 + 30 = 42.5 in, 30 x 0.25 + 60 x 0.5 + 90 = 127.5 out: rounded up
    assert found.choice.price_in_micro == 43 and found.choice.price_out_micro == 128
    assert any(line.startswith("domain, sub-domain level: translation") for line in found.why)


# --- hardware, budget, latency ------------------------------------------------------------------


def test_the_choice_depends_on_the_hardware(world) -> None:
    big = world.recommend(hardware="workstation-64gb")
    small = world.recommend(hardware="ram=400MB")
    assert big.choice.precision in ("fp32", "bf16") and small.choice.precision == "nf4"
    assert small.choice.footprint.total <= parse_hardware("ram=400MB").budget_bytes
    assert any("memory:" in line and "400MB" not in line for line in small.why)
    gpu = world.recommend(hardware="h100-80gb")
    assert gpu.choice.speed.tokens_per_second > big.choice.speed.tokens_per_second
    assert "GPU bandwidth" in gpu.choice.speed.basis
    assert len(big.alternatives) == 2 and big.alternatives[0].chain == big.choice.chain
    assert len(big.alternatives[1].chain) < len(big.choice.chain)


@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_preset_gets_a_variant_that_fits_its_memory(world, preset) -> None:
    found = world.recommend(hardware=preset, context_tokens=8192)
    assert found.choice.footprint.total <= PRESETS[preset].budget_bytes
    assert found.choice.footprint.kv_cache > 0 and found.choice.footprint.adapters > 0


def test_a_budget_shortens_the_chain_and_a_latency_limit_is_kept(world) -> None:
    cheaper = world.recommend(budget_micro=100)
    assert cheaper.choice.model == "english@1.0.0:0.5+nlp-research@1.0.0:1"
    assert "chain: cut to 2 of the 3 matched levels; the whole chain costs 128" in "".join(
        cheaper.why
    )
    assert world.recommend(budget_micro=0).choice.chain == ()
    unhurried = world.recommend(reply_tokens=100)
    fast = world.recommend(max_latency_ms=1800, reply_tokens=100)
    assert unhurried.choice.latency_ms > 1800 >= fast.choice.latency_ms
    assert fast.choice.precision == "nf4" and len(fast.choice.chain) == 3


def test_nothing_fits_names_the_nearest_option_and_what_it_needs(world) -> None:
    with pytest.raises(InvalidInput) as raised:
        world.recommend(hardware="ram=100MB")
    message = raised.value.message
    assert "nothing fits" in message and "nf4 + no adapters" in message and "at least" in message
    with pytest.raises(InvalidInput, match="fastest option that fits.*raise --max-latency-ms"):
        world.recommend(max_latency_ms=1)
    with pytest.raises(InvalidInput, match="presets: raspberry-pi-4gb, laptop-8gb"):
        world.recommend(hardware="toaster")
    with pytest.raises(InvalidInput, match="query is empty"):
        world.recommend(query="  ")


# --- speed --------------------------------------------------------------------------------------


def test_speed_is_measured_here_and_scaled_elsewhere(world, smollm2_record, tmp_path) -> None:
    measured = calibrate(smollm2_record, world.settings.models_dir, tmp_path, precisions=("fp32",))
    assert measured.seconds_per_token["fp32"] > 0 and measured.bandwidth_gbs > 0
    assert (tmp_path / "routing" / f"calibration-{measured.machine}.json").is_file()
    here = replace(parse_hardware("ram=8GB"), name="detected")
    weights = measured.weight_bytes["fp32"]
    speed = estimate_speed(here, "fp32", weights, 0, measured)
    assert speed.seconds_per_token == pytest.approx(measured.seconds_per_token["fp32"])
    chained = estimate_speed(here, "fp32", weights, 3, measured)
    assert chained.seconds_per_token >= speed.seconds_per_token
    assert set(measured.adapter_overhead) == {"fp32"}
    synthetic = Calibration("m", "d", 10.0, {"fp32": 10**9}, {"fp32": 0.5}, {"fp32": 0.1}, "now")
    slow = estimate_speed(parse_hardware("ram=8GB,bw=5GB"), "fp32", 10**9, 0, synthetic)
    quick = estimate_speed(parse_hardware("ram=8GB,bw=20GB"), "fp32", 10**9, 0, synthetic)
    assert slow.seconds_per_token == pytest.approx(
        1.0
    ) and quick.seconds_per_token == pytest.approx(0.25)


# --- the CLI and the API ------------------------------------------------------------------------


def test_viz_recommend_prints_the_choice_alternatives_and_why(world) -> None:
    home = ["--home", str(world.settings.home)]
    result = CliRunner().invoke(app, [*home, "recommend", MT_QUESTION, "--hardware", "ram=400MB"])
    assert result.exit_code == 0, result.output
    assert "precision nf4" in result.output and "sub-domain translation@1.0.0" in result.output
    assert "why:" in result.output and "alternatives:" in result.output
    as_json = CliRunner().invoke(app, [*home, "recommend", MT_QUESTION, "--json"])
    assert json.loads(as_json.output)["chain"][2]["adapter"] == "translation@1.0.0"
    bad = CliRunner().invoke(app, [*home, "recommend", MT_QUESTION, "--hardware", "ram=1MB"])
    assert bad.exit_code == 2 and "nothing fits" in bad.output


def test_model_auto_in_the_api_returns_and_charges_the_chosen_chain(world) -> None:
    from viz.app import create_app

    with world.session() as session:
        key = create_api_key(session, get_account(session, "ada")).token
    with run_server(create_app(world.settings, world.database)) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)

        def auto(hardware: str, **options):  # type: ignore[no-untyped-def]
            return client.chat.completions.create(
                model="auto",
                messages=[{"role": "user", "content": MT_QUESTION}],
                max_tokens=8,
                temperature=0,
                extra_body={"viz": {"route": {"hardware": hardware}}},
                **options,
            )

        small, big = auto("ram=400MB"), auto("workstation-64gb")
        assert small.model == CHAIN
        routes = [r.model_extra["viz"]["route"] for r in (small, big)]
        assert routes[0]["precision"] == "nf4" and routes[1]["precision"] != "nf4"
        assert routes[0]["why"] and len(routes[0]["alternatives"]) == 2
        chunks = list(auto("ram=400MB", stream=True))
        assert chunks[-1].model_extra["viz"]["route"]["precision"] == "nf4"
        assert "auto" in {m.id for m in client.models.list().data}
    with settled(world.database) as session:
        event = session.scalar(select(UsageEvent).where(UsageEvent.request_id == small.id))
        assert event is not None and "translation@1.0.0" in event.settlement_json
