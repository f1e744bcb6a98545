"""The vLLM engine against a real vLLM server (`scripts/vllm-test-server`, started by `make
test`; its URL in VIZ_TEST_VLLM_URL): greedy answers word for word the builtin engine's for the
base, one adapter and a weighted composition, the base alone in a full batch, the rank limit,
a server that serves another model, health checks, fail-over, a connection cut mid-answer, and
the gateway with the official client on both engines: the same answers, usage and charges."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import openai
import pytest
from sqlalchemy import select

from viz.accounts import create_api_key, get_account
from viz.config import Settings
from viz.errors import InvalidInput, Overloaded
from viz.ledger import Balance, balances, topup
from viz.models.generate import GenerationSettings, chat_prompt_ids
from viz.serving.engines import AdapterWeights, Engine, VllmOptions, open_engine
from viz.serving.engines.vllm import VllmServer, check_served, rendezvous
from viz.store import open_database, session_scope
from viz.store.schema import AdapterVersion, UsageEvent
from worlds.ledger import build_market
from worlds.serving import cutting_proxy, make_adapter, register, run_server, settled

pytestmark = pytest.mark.model

VLLM_WAIT_S = float(os.environ.get("VIZ_TEST_VLLM_WAIT_S", "900"))
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def vllm_url() -> str:
    """The test vLLM server's URL: VIZ_TEST_VLLM_URL, or the one `make test` starts in the
    background (`scripts/vllm-test-server --background`), waited for; VIZ_TEST_VLLM=0 skips."""
    if os.environ.get("VIZ_TEST_VLLM") == "0":
        pytest.skip("VIZ_TEST_VLLM=0: the vLLM engine tests are skipped")
    if os.environ.get("VIZ_TEST_VLLM_URL"):
        return os.environ["VIZ_TEST_VLLM_URL"]
    url_file, failed = REPO / ".viz/vllm-test-server.url", REPO / ".viz/vllm-test-server.failed"
    if not (REPO / ".viz/vllm-test-server.setup.log").exists() and not url_file.exists():
        pytest.skip("no vLLM server: run scripts/vllm-test-server (make test starts one)")
    deadline = time.monotonic() + VLLM_WAIT_S
    while time.monotonic() < deadline:
        if url_file.exists():
            return url_file.read_text().strip()
        if failed.exists():
            pytest.fail(f"the test vLLM server did not start:\n{failed.read_text()}")
        time.sleep(1)
    pytest.fail(f"the test vLLM server was not ready within {VLLM_WAIT_S:.0f} s")


GREEDY = GenerationSettings(max_tokens=24, temperature=0.0)
QUESTIONS = [
    "What is the capital of France?",
    "Name three colours.",
    "Write one sentence about rivers.",
    "What is two plus two?",
    "Who wrote Hamlet?",
]


def test_rendezvous_keeps_keys_on_their_server_when_another_goes() -> None:
    servers = [VllmServer(f"http://10.0.0.{n}:8001") for n in range(1, 5)]
    keys = [f"viz-{n:04d}" for n in range(200)]
    first = {key: rendezvous(key, servers)[0].url for key in keys}
    assert len(set(first.values())) == 4, "keys spread over every server"
    gone = servers[1].url
    after = {key: rendezvous(key, [s for s in servers if s.url != gone])[0].url for key in keys}
    moved = [key for key in keys if first[key] != after[key]]
    assert moved and all(first[key] == gone for key in moved), "only the lost server's keys move"


def test_a_vllm_url_must_be_http() -> None:
    with pytest.raises(InvalidInput, match="http"):
        VllmServer("127.0.0.1:8000")


def test_stacked_adapters_on_disk_are_bounded_least_recently_used_first(
    tiny_model_folder, tmp_path
) -> None:
    from worlds.catalogue import make_tiny_adapter

    engine = bare_engine(tmp_path / "stacked")
    assert engine.folders_max == 2
    folder = make_tiny_adapter(tiny_model_folder, tmp_path / "lora", seed=1)
    keys = []
    for weight in (0.1, 0.2, 0.3):
        keys.append(engine.compose([use(folder, 1, weight)]).key)
        time.sleep(0.01)
    # two kept: 0.1, the oldest, went when 0.3 came
    assert sorted(f.name for f in (tmp_path / "stacked").glob("viz-*")) == sorted(keys[1:])
    engine.compose([use(folder, 1, 0.2)])  # used again: now the most recent
    time.sleep(0.01)
    engine.compose([use(folder, 1, 0.1)])  # written again: 0.3 is the least recently used
    left = sorted(f.name for f in (tmp_path / "stacked").glob("viz-*"))
    assert left == sorted([keys[0], keys[1]])


def test_stacked_adapters_on_disk_are_bounded_by_bytes_too(tiny_model_folder, tmp_path) -> None:
    from worlds.catalogue import make_tiny_adapter

    folder = make_tiny_adapter(tiny_model_folder, tmp_path / "lora", seed=1)
    size = (folder / "adapter_model.safetensors").stat().st_size
    engine = bare_engine(tmp_path / "stacked", adapters_max=8, dir_bytes_max=int(2.5 * size))
    keys = []
    for weight in (0.1, 0.2, 0.3, 0.4):
        keys.append(engine.compose([use(folder, 1, weight)]).key)
        time.sleep(0.01)
    left = sorted(f.name for f in (tmp_path / "stacked").glob("viz-*"))
    assert left == sorted(keys[2:]), "the two most recent fit in 2.5 adapters' bytes"


def test_a_server_failing_its_health_check_is_paused_before_any_request(vllm_url, tmp_path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    engine = bare_engine(tmp_path / "stacked", servers=[VllmServer(dead), VllmServer(vllm_url)])
    engine.watch_health(interval_s=0.05)
    try:
        deadline = time.monotonic() + 10
        while not engine.counts.get((dead, "health_failures")) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert engine.counts.get((dead, "health_failures"), 0) >= 1
        assert engine.counts.get((vllm_url, "health_failures"), 0) == 0
        assert [s.url for s in engine._candidates("any-key")] == [vllm_url, dead]
    finally:
        engine.close(drain_s=0)


def bare_engine(adapter_dir: Path, *, servers=(), adapters_max=1, dir_bytes_max=2**40):  # type: ignore[no-untyped-def]
    """A vLLM engine without a tokenizer: enough to stack adapters and place them."""
    from viz.serving.engines.vllm import VllmEngine

    return VllmEngine(
        base_id="tiny",
        tokenizer=None,
        servers=list(servers),
        served_name="tiny",
        adapter_dir=adapter_dir,
        rank_max=64,
        batch_max=1,
        queue_max=1,
        adapters_max=adapters_max,
        zero_adapter=adapter_dir / "viz-zero",
        dir_bytes_max=dir_bytes_max,
    )


@pytest.fixture(scope="module")
def adapters(tmp_path_factory, smollm2_folder):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("vllm-adapters")
    return {
        "qa": make_adapter(smollm2_folder, root / "qa", seed=1),
        "mt": make_adapter(smollm2_folder, root / "mt", seed=2, rank=4),
        "kid": make_adapter(smollm2_folder, root / "kid", seed=3, rank=4),
    }


def use(folder, version_id: int, weight: float = 1.0) -> AdapterWeights:  # type: ignore[no-untyped-def]
    return AdapterWeights(
        version_id,
        f"{folder.name}@1.0.0",
        folder / "adapter_model.safetensors",
        (folder / "adapter_config.json").read_text(),
        weight,
    )


def open_vllm(record, models_dir, tmp_path, *urls: str, rank_max: int = 64, batch_max: int = 8):  # type: ignore[no-untyped-def]
    """The vLLM engine over `urls` (stacked adapters in tmp_path/stacked)."""
    return open_engine(
        "vllm",
        record,
        models_dir,
        precision="fp32",
        batch_max=batch_max,
        queue_max=2 * batch_max,
        adapter_cache=None,
        vllm=VllmOptions(urls, tmp_path / "stacked", rank_max=rank_max, adapters_max=8),
    )


def open_both(smollm2_record, models_dir, tmp_path, vllm_url: str) -> tuple[Engine, Engine]:  # type: ignore[no-untyped-def]
    """The builtin engine and the vLLM engine over the same base."""
    builtin = open_engine(
        "builtin",
        smollm2_record,
        models_dir,
        precision="fp32",
        batch_max=8,
        queue_max=16,
        adapter_cache=None,
    )
    return builtin, open_vllm(smollm2_record, models_dir, tmp_path, vllm_url)


def answers(engine: Engine, jobs) -> list[str]:  # type: ignore[no-untyped-def]
    """Submit every (prompt ids, adapters) job at once; their greedy answers in order."""
    generations = [engine.submit(ids, GREEDY, engine.compose(adapters)) for ids, adapters in jobs]
    return ["".join(generation.pieces()) for generation in generations]


def test_greedy_answers_match_the_builtin_engine_word_for_word(
    adapters, vllm_url, smollm2_record, models_dir, tmp_path
) -> None:
    builtin, vllm = open_both(smollm2_record, models_dir, tmp_path, vllm_url)
    try:
        ids = [
            chat_prompt_ids(
                builtin.tokenizer, [{"role": "user", "content": q}], prompt_tokens_max=512
            )
            for q in QUESTIONS[:3]
        ]
        qa, mt = adapters["qa"], adapters["mt"]
        jobs = [
            (ids[0], []),
            (ids[1], [use(qa, 1)]),
            (ids[2], [use(qa, 1, 0.7), use(mt, 2, 0.5)]),
            (ids[0], [use(mt, 2)]),
        ]
        expected, got = answers(builtin, jobs), answers(vllm, jobs)
    finally:
        builtin.close(drain_s=5)
        vllm.close(drain_s=5)
    assert got == expected
    assert len(set(expected)) == 4, "the adapters change the answers"


def test_logprobs_penalties_bias_and_json_schemas_pass_through_alike(
    vllm_url, smollm2_record, models_dir, tmp_path
) -> None:
    builtin, vllm = open_both(smollm2_record, models_dir, tmp_path, vllm_url)
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 20}, "sunny": {"type": "boolean"}},
        "required": ["city", "sunny"],
        "additionalProperties": False,
    }
    scored = GenerationSettings(
        max_tokens=16, logprobs=2, frequency_penalty=1.0, logit_bias=((504, -5.0),)
    )
    constrained = GenerationSettings(max_tokens=40, json_schema=json.dumps(schema))
    try:
        ids = chat_prompt_ids(
            builtin.tokenizer, [{"role": "user", "content": QUESTIONS[0]}], prompt_tokens_max=512
        )
        runs = {}
        for name, engine in (("builtin", builtin), ("vllm", vllm)):
            first = engine.submit(ids, scored, engine.compose([]))
            second = engine.submit(ids, constrained, engine.compose([]))
            runs[name] = ("".join(first.pieces()), first.scored, "".join(second.pieces()))
    finally:
        builtin.close(drain_s=5)
        vllm.close(drain_s=5)
    (text, scores, document), (vllm_text, vllm_scores, vllm_document) = runs.values()
    assert vllm_text == text
    assert [s.token for s in vllm_scores] == [s.token for s in scores]
    assert all(abs(a.logprob - b.logprob) < 0.05 for a, b in zip(scores, vllm_scores, strict=True))
    assert [t for t, _ in vllm_scores[0].top[:2]] == [t for t, _ in scores[0].top]
    for answer in (document, vllm_document):
        jsonschema.validate(json.loads(answer), schema)


def test_a_base_request_in_a_full_batch_answers_as_alone(
    adapters, vllm_url, smollm2_record, models_dir, tmp_path
) -> None:
    """vLLM PRs #48421/#49656: with every LoRA slot taken, a row without an adapter got the
    last slot's delta; Viz sends base rows with a zero adapter of their own."""
    _, vllm = open_both(smollm2_record, models_dir, tmp_path, vllm_url)
    try:
        ids = [
            chat_prompt_ids(vllm.tokenizer, [{"role": "user", "content": q}], prompt_tokens_max=512)
            for q in QUESTIONS
        ]
        qa, mt = adapters["qa"], adapters["mt"]
        alone = answers(vllm, [(ids[0], [])])[0]
        crowd = [
            (ids[1], [use(qa, 1)]),
            (ids[2], [use(mt, 2)]),
            (ids[3], [use(qa, 1, 0.7), use(mt, 2, 0.5)]),
            (ids[4], [use(qa, 1, 0.3), use(mt, 2, 0.9)]),
            (ids[0], []),
        ]
        with ThreadPoolExecutor(2) as pool:
            batched = pool.submit(answers, vllm, crowd).result()
    finally:
        vllm.close(drain_s=5)
    assert batched[-1] == alone


def test_a_composition_past_the_servers_rank_is_refused(
    adapters, vllm_url, smollm2_record, models_dir, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    vllm = open_vllm(smollm2_record, models_dir, tmp_path, vllm_url, rank_max=8, batch_max=2)
    try:
        with pytest.raises(InvalidInput, match=r"rank 12 .*r=8.*r=4.*rank 8 at most"):
            vllm.compose([use(adapters["qa"], 1), use(adapters["mt"], 2)])
    finally:
        vllm.close(drain_s=1)


def test_a_server_serving_another_base_is_refused_naming_both(vllm_url, smollm2_folder) -> None:
    with pytest.raises(InvalidInput, match=r"serves smollm2-135m-instruct, not base other-base"):
        check_served(VllmServer(vllm_url), "other-base", smollm2_folder / "nowhere")


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_dead_server_is_skipped_and_requests_fail_over_before_the_first_token(
    adapters, vllm_url, smollm2_record, models_dir, tmp_path
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there: a server that died
    engine = open_vllm(smollm2_record, models_dir, tmp_path, dead, vllm_url, batch_max=4)
    alone = open_vllm(smollm2_record, models_dir, tmp_path, vllm_url, batch_max=4)
    try:
        ids = chat_prompt_ids(
            engine.tokenizer, [{"role": "user", "content": QUESTIONS[0]}], prompt_tokens_max=512
        )
        jobs = [(ids, [use(adapters["qa"], 1, w)]) for w in (0.25, 0.5, 0.75, 1.0)]
        for server in engine.servers:  # its /health flaps, so only a request finds it dead
            if server.url == dead:
                server.healthy = lambda: True  # type: ignore[method-assign]
        engine._failed_until.clear()  # as if the dead server's pause had run out
        assert answers(engine, jobs) == answers(alone, jobs)
        assert engine.counts.get((dead, "errors"), 0) >= 1, "some keys were placed on it first"
        assert engine.counts[(vllm_url, "requests")] == 4
    finally:
        engine.close(drain_s=5)
        alone.close(drain_s=5)
    with pytest.raises(Overloaded, match="no vLLM server answers"):
        open_vllm(smollm2_record, models_dir, tmp_path, dead)


def test_a_cancelled_generation_stops_upstream_and_keeps_its_count(
    vllm_url, smollm2_record, models_dir, tmp_path
) -> None:
    engine = open_vllm(smollm2_record, models_dir, tmp_path, vllm_url, batch_max=2)
    try:
        ids = chat_prompt_ids(
            engine.tokenizer,
            [{"role": "user", "content": "Tell me a long story."}],
            prompt_tokens_max=512,
        )
        settings = GenerationSettings(max_tokens=500, temperature=0.8, seed=1)
        generation = engine.submit(ids, settings, engine.compose([]))
        pieces = generation.pieces()
        assert next(pieces)
        generation.cancel()
        rest = "".join(pieces)
        assert generation.finish_reason == "cancelled"
        assert 1 <= generation.completion_tokens < 500
        assert isinstance(rest, str)
    finally:
        engine.close(drain_s=5)


@pytest.fixture
def market(tmp_path, adapters, models_dir) -> Iterator[tuple[Any, dict[str, Any]]]:  # type: ignore[no-untyped-def]
    """A catalogue with qa-real, mt-real and kid-real (a child of qa-real); bob holds a key and
    funds. Yields the database and the settings `serving` starts gateways with."""
    (tmp_path / "models").symlink_to(models_dir, target_is_directory=True)
    database = open_database(Settings(home=tmp_path).database_url_resolved)
    build_market(database)
    blobs = Settings(home=tmp_path).blobs_dir
    with session_scope(database) as session:
        session.execute(AdapterVersion.__table__.update().values(status="rejected"))
        qa = register(session, blobs, adapters["qa"], "qa-real", "ada")
        register(session, blobs, adapters["mt"], "mt-real", "carol")
        kid = register(session, blobs, adapters["kid"], "kid-real", "dan")
        child = session.get(AdapterVersion, kid)
        child.adapter.parent_id = session.get(AdapterVersion, qa).adapter_id
        topup(session, "bob", 10_000_000, transfer_id="bob-funds")
        key = create_api_key(session, get_account(session, "bob")).token
    try:
        yield database, {"home": tmp_path, "key": key}
    finally:
        database.dispose()


@contextmanager
def serving(database, home: Path, engine: str, urls: list[str]) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """`viz serve --engine ENGINE [--vllm URL...]` over `database`; yields its URL."""
    from viz.app import create_app

    settings = Settings(home=home, serve_engine=engine, vllm_urls=urls)
    app = create_app(settings, database)
    try:
        with run_server(app) as url:
            yield url
    finally:
        app.state.server.close()


def balance(database, code: str) -> Balance:  # type: ignore[no-untyped-def]
    with settled(database) as session:
        return balances(session, code)[0]


def usage_event(database, request_id: str) -> UsageEvent | None:  # type: ignore[no-untyped-def]
    with settled(database) as session:
        event = session.scalar(select(UsageEvent).where(UsageEvent.request_id == request_id))
        if event is not None:
            session.expunge(event)
        return event


ASKS = [
    ("smollm2-135m-instruct", "Name three colours."),
    ("qa-real", "What is the capital of France?"),
    ("kid-real", "Who wrote Hamlet?"),  # with its parent qa-real, at weight 1
    ("qa-real:0.7+mt-real:0.5", "Name three colours."),
]


def test_the_gateway_answers_and_charges_alike_on_both_engines(market, vllm_url) -> None:  # type: ignore[no-untyped-def]
    """The same paid requests through `viz serve` on the builtin engine and on vLLM: the same
    greedy text, the same usage, the same charges (the base, an adapter, a child with its
    parent, a weighted composition)."""
    database, world = market
    seen: dict[str, list[tuple[str, int, int, int]]] = {}
    for engine, urls in (("builtin", []), ("vllm", [vllm_url])):
        with serving(database, world["home"], engine, urls) as url:
            client = openai.OpenAI(base_url=f"{url}/v1", api_key=world["key"], max_retries=0)
            rows = []
            for model, question in ASKS:
                answer = client.chat.completions.create(
                    model=model,
                    messages=[{"role": "user", "content": question}],
                    max_tokens=16,
                    temperature=0,
                )
                event = usage_event(database, answer.id)
                assert answer.usage is not None and event is not None
                assert event.tokens_out == answer.usage.completion_tokens
                rows.append((answer.choices[0].message.content or "", *_counts(answer, event)))
            for options in OPENAI_OPTIONS:  # the same fields, passed through or done in Viz
                answer = client.chat.completions.create(
                    model="smollm2-135m-instruct", max_tokens=24, temperature=0, **options
                )
                rows.append(_shape(answer))
            seen[engine] = rows
    assert seen["vllm"] == seen["builtin"]
    texts = {row[0] for row in seen["vllm"][: len(ASKS)]}
    assert len(texts) == len(ASKS), "each model answers its own"
    assert balance(database, "creator:dan").posted > 0, "the child's creator is paid"


SCHEMA = {
    "type": "object",
    "properties": {"colour": {"enum": ["red", "green", "blue"]}, "count": {"type": "integer"}},
    "required": ["colour"],
    "additionalProperties": False,
}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 12}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
PARTS = [{"type": "text", "text": "Name three"}, {"type": "text", "text": "colours."}]
OPENAI_OPTIONS: list[dict[str, Any]] = [
    {"messages": [{"role": "user", "content": PARTS}], "logprobs": True, "top_logprobs": 2},
    {
        "messages": [{"role": "user", "content": "Pick a colour."}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "c", "schema": SCHEMA}},
    },
    {
        "messages": [{"role": "user", "content": "Weather in Oslo?"}],
        "tools": [WEATHER],
        "tool_choice": "required",
    },
    {"messages": [{"role": "user", "content": "Count to five."}], "frequency_penalty": 1.5},
]


def _shape(answer: Any) -> tuple[Any, ...]:
    """What must agree between engines: the text, each token, the tool calls' names and
    arguments, and the usage."""
    choice = answer.choices[0]
    tokens = [e.token for e in choice.logprobs.content] if choice.logprobs else []
    calls = [
        (call.function.name, json.loads(call.function.arguments))
        for call in choice.message.tool_calls or []
    ]
    return choice.message.content, tokens, calls, choice.finish_reason, answer.usage.total_tokens


def _counts(answer: Any, event: UsageEvent) -> tuple[int, int, int]:
    return answer.usage.prompt_tokens, answer.usage.completion_tokens, event.charge


def test_a_paid_chat_completion_through_vllm_streams_and_is_metered(market, vllm_url) -> None:  # type: ignore[no-untyped-def]
    database, world = market
    with serving(database, world["home"], "vllm", [vllm_url]) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=world["key"], max_retries=0)
        bob = balance(database, "consumer:bob").posted
        ask = {
            "model": "qa-real:0.7+mt-real:0.5",
            "messages": [{"role": "user", "content": "Name three colours."}],
            "max_tokens": 16,
            "temperature": 0,
        }
        response = client.chat.completions.create(**ask)
        event = usage_event(database, response.id)
        assert event is not None and response.usage is not None
        assert balance(database, "consumer:bob").posted == bob - event.charge
        assert balance(database, "creator:ada").posted > 0
        assert balance(database, "creator:carol").posted > 0
        chunks = list(
            client.chat.completions.create(
                **ask, stream=True, stream_options={"include_usage": True}
            )
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == response.choices[0].message.content
        assert chunks[-1].usage is not None
        assert chunks[-1].usage.completion_tokens == response.usage.completion_tokens
        metrics = httpx.get(f"{url}/metrics").text
    assert (
        f'viz_engine_events_total{{engine="vllm",event="requests",server="{vllm_url}"}} 2.0'
        in metrics
    )


def test_a_server_dying_mid_answer_settles_what_was_sent_once(market, vllm_url) -> None:  # type: ignore[no-untyped-def]
    """The connection to vLLM is cut mid-answer (as when its server dies): a stream that had
    sent text is settled for the tokens it sent, once; a whole answer that never came is voided.
    No hold is left behind either way."""
    database, world = market
    ask = {
        "model": "qa-real",
        "messages": [{"role": "user", "content": "Tell me a long story about a river."}],
        "max_tokens": 200,
        "temperature": 0,
    }
    with (
        cutting_proxy(vllm_url, after_bytes=3000) as (proxy, cuts),
        serving(database, world["home"], "vllm", [proxy]) as url,
    ):
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=world["key"], max_retries=0)
        before = balance(database, "consumer:bob")
        pieces, request_id = [], None
        with pytest.raises(openai.APIError, match="stopped answering"):
            for chunk in client.chat.completions.create(**ask, stream=True):
                request_id = chunk.id
                pieces += [c.delta.content for c in chunk.choices if c.delta.content]
        assert cuts.count == 1 and pieces, "the answer was cut after some text"
        event = usage_event(database, str(request_id))
        assert event is not None, "what was sent is settled"
        assert len(pieces) <= event.tokens_out < ask["max_tokens"]
        after = balance(database, "consumer:bob")
        assert after.posted == before.posted - event.charge, "charged once, for what was sent"
        assert after.pending_debits == before.pending_debits == 0, "no hold left"

        with pytest.raises(openai.APIStatusError) as refused:
            client.chat.completions.create(**ask)
        assert cuts.count == 2
        assert refused.value.status_code == 503
        assert balance(database, "consumer:bob") == after, "an answer never given costs nothing"
