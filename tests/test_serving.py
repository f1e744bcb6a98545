"""Serving: the multi-adapter engine against plain PEFT, and the HTTP API through the official
`openai` client over real HTTP, metered in the ledger. Uses the real default model."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
from sqlalchemy import select

from viz.accounts import create_api_key, get_account
from viz.config import Settings
from viz.errors import InvalidInput
from viz.ledger import balances, topup
from viz.models.generate import GenerationSettings, TokenStream, chat_prompt_ids
from viz.models.loading import load_model
from viz.serving import parse_model
from viz.serving.engines.builtin import BuiltinEngine as Engine
from viz.serving.engines.lora import load_lora
from viz.store import open_database, session_scope
from viz.store.schema import AdapterVersion, UsageEvent
from worlds.ledger import build_market
from worlds.serving import make_adapter, peft_composition, register, run_server, settled

pytestmark = pytest.mark.model

GREEDY = GenerationSettings(max_tokens=20)
QUESTIONS = ["What is the capital of France?", "Name three colours.", "Write a haiku about rain."]


@pytest.fixture(scope="module")
def adapters(tmp_path_factory, smollm2_folder) -> dict[str, Path]:  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("adapters")
    return {
        "qa": make_adapter(smollm2_folder, root / "qa", seed=1),
        "mt": make_adapter(smollm2_folder, root / "mt", seed=2, rank=4),
    }


def lora(folder: Path, version_id: int):  # type: ignore[no-untyped-def]
    config = (folder / "adapter_config.json").read_text()
    return load_lora(
        folder / "adapter_model.safetensors", config, version_id=version_id, label=folder.name
    )


def peft_answer(smollm2_record, models_dir, folders_weights, prompt_ids) -> str:  # type: ignore[no-untyped-def]
    """Greedy answer of plain PEFT with these adapters active, each scaled by its weight."""
    model = peft_composition(load_model(smollm2_record, models_dir).model, folders_weights)
    stream = TokenStream(
        model, load_model(smollm2_record, models_dir).tokenizer, prompt_ids, GREEDY
    )
    "".join(stream)
    return stream.text


def batch_world(adapters, smollm2_record, models_dir):  # type: ignore[no-untyped-def]
    """A fresh default model, the QUESTIONS as chat prompts, and the qa and mt adapters."""
    loaded = load_model(smollm2_record, models_dir)
    prompts = [
        chat_prompt_ids(loaded.tokenizer, [{"role": "user", "content": q}], prompt_tokens_max=512)
        for q in QUESTIONS
    ]
    return loaded, prompts, lora(adapters["qa"], 1), lora(adapters["mt"], 2)


def test_a_batch_of_different_adapters_matches_plain_peft_token_for_token(
    adapters, smollm2_record, models_dir
) -> None:
    loaded, prompts, qa, mt = batch_world(adapters, smollm2_record, models_dir)
    tokenizer = loaded.tokenizer
    engine = Engine(loaded.model, tokenizer, batch_max=8)
    try:
        jobs = [
            engine.submit(prompts[0], GREEDY, [(qa, 1.0)]),
            engine.submit(prompts[1], GREEDY, [(mt, 1.0)]),
            engine.submit(prompts[2], GREEDY, []),
            engine.submit(prompts[0], GREEDY, [(qa, 0.7), (mt, 0.5)]),
        ]
        answers = ["".join(job.pieces()) for job in jobs]
        assert engine.rows_decoded > engine.steps, "the rows were decoded together"
    finally:
        engine.close()
    base = TokenStream(load_model(smollm2_record, models_dir).model, tokenizer, prompts[2], GREEDY)
    "".join(base)
    expected = [
        peft_answer(smollm2_record, models_dir, [(adapters["qa"], 1.0)], prompts[0]),
        peft_answer(smollm2_record, models_dir, [(adapters["mt"], 1.0)], prompts[1]),
        base.text,
        peft_answer(
            smollm2_record, models_dir, [(adapters["qa"], 0.7), (adapters["mt"], 0.5)], prompts[0]
        ),
    ]
    assert answers == expected
    assert len(set(answers[0:1] + answers[3:4])) == 2, "the composition changes the answer"


def test_the_model_grammar() -> None:
    ref = parse_model("qa@1.0.0:0.7+mt:0.5")
    assert [(t.name, t.version, t.weight) for t in ref.terms] == [
        ("qa", "1.0.0", 0.7),
        ("mt", None, 0.5),
    ]
    assert parse_model("smollm2-135m-instruct").single_name == "smollm2-135m-instruct"
    assert parse_model("auto").auto and not parse_model("qa").auto
    for bad, message in [
        ("qa:9", "weight"),
        ("a b", "cannot read"),
        ("qa+qa", "twice"),
        ("", "empty"),
    ]:
        with pytest.raises(InvalidInput, match=message):
            parse_model(bad)


# --- the API over HTTP ----------------------------------------------------------------------


class Api:
    def __init__(self, url: str, keys: dict[str, str], settings: Settings, database) -> None:  # type: ignore[no-untyped-def]
        self.url, self.keys, self.settings, self.database = url, keys, settings, database
        self.app = None
        self.adapter_folders: dict[str, Path] = {}

    def client(self, who: str = "bob") -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=self.keys[who], max_retries=0)

    def balance(self, code: str) -> int:
        with settled(self.database) as session:
            return balances(session, code)[0].posted


@pytest.fixture(scope="module")
def api(tmp_path_factory, adapters, models_dir) -> Iterator[Api]:  # type: ignore[no-untyped-def]

    from viz.app import create_app

    home = tmp_path_factory.mktemp("serve-home")
    (home / "models").symlink_to(models_dir, target_is_directory=True)
    settings = Settings(home=home, serve_queue_max=8)
    database = open_database(settings.database_url_resolved)
    build_market(database)  # ada, bob, carol, dan; the ledger world's adapters are not servable
    keys = {}
    with session_scope(database) as session:
        session.execute(AdapterVersion.__table__.update().values(status="rejected"))
        register(session, settings.blobs_dir, adapters["qa"], "qa-real", "ada")
        register(
            session,
            settings.blobs_dir,
            adapters["mt"],
            "mt-real",
            "carol",
            price_in=50,
            price_out=200,
        )
        register(
            session, settings.blobs_dir, adapters["mt"], "secret", "carol", visibility="private"
        )
        register(session, settings.blobs_dir, adapters["mt"], "gone", "carol", status="taken_down")
        topup(session, "bob", 10_000_000, transfer_id="bob-funds")
        for name in ("bob", "dan", "carol"):
            keys[name] = create_api_key(session, get_account(session, name)).token
    app = create_app(settings, database)
    with run_server(app) as url:
        handle = Api(url, keys, settings, database)
        handle.app = app
        handle.adapter_folders = adapters
        yield handle
    database.dispose()


def ask(client: openai.OpenAI, model: str, question: str = QUESTIONS[0], **options):  # type: ignore[no-untyped-def]
    return client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": question}],
        max_tokens=16,
        temperature=0,
        **options,
    )


def test_models_lists_bases_and_servable_adapters_with_prices(api) -> None:
    ids = {m.id: m for m in api.client().models.list().data}
    assert "smollm2-135m-instruct" in ids and "qa-real@1.0.0" in ids
    assert "secret@1.0.0" not in ids and "gone@1.0.0" not in ids
    assert ids["qa-real@1.0.0"].owned_by == "ada"
    assert ids["qa-real@1.0.0"].viz["price_out_micro_per_1k"] == 300  # type: ignore[attr-defined]


def test_a_chat_completion_is_answered_metered_and_paid_to_the_creator(api) -> None:
    before_bob, before_ada = (
        api.balance("consumer:bob"),
        api.balance("creator:ada") if _has(api, "creator:ada") else 0,
    )
    answer = ask(api.client(), "qa-real")
    assert answer.choices[0].message.content
    assert answer.model == "qa-real@1.0.0:1"
    usage = answer.usage
    assert usage is not None and usage.prompt_tokens > 0 and usage.completion_tokens > 0
    charge = -(-(usage.prompt_tokens * 100 + usage.completion_tokens * 300) // 1000)
    assert api.balance("consumer:bob") == before_bob - charge
    assert api.balance("creator:ada") > before_ada
    with settled(api.database) as session:
        event = session.scalar(select(UsageEvent).where(UsageEvent.request_id == answer.id))
    assert (
        event is not None and event.charge == charge and event.tokens_out == usage.completion_tokens
    )


def _has(api: Api, code: str) -> bool:
    try:
        api.balance(code)
    except Exception:  # noqa: BLE001
        return False
    return True


def test_streaming_gives_the_same_text_and_usage_last(api) -> None:
    plain = ask(api.client(), "mt-real").choices[0].message.content
    chunks = list(ask(api.client(), "mt-real", stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert chunks[-2].choices[0].finish_reason in ("stop", "length")


def test_a_composition_and_the_completions_endpoint(api) -> None:
    answer = ask(api.client(), "qa-real:0.7+mt-real@1.0.0:0.5")
    assert answer.model == "qa-real@1.0.0:0.7+mt-real@1.0.0:0.5"
    text = api.client().completions.create(
        model="qa-real", prompt="The capital of France is", max_tokens=5, temperature=0
    )
    assert text.choices[0].text and text.usage.completion_tokens <= 5


def test_errors_have_the_openai_shape_and_status(api) -> None:
    bad = openai.OpenAI(
        base_url=f"{api.url}/v1", api_key="viz_" + "0" * 16 + "_" + "0" * 64, max_retries=0
    )
    with pytest.raises(openai.AuthenticationError):
        ask(bad, "qa-real")
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        ask(api.client(), "no-such-adapter")
    with pytest.raises(openai.BadRequestError, match="presets: raspberry-pi-4gb"):
        ask(api.client(), "auto", extra_body={"viz": {"route": {"hardware": "toaster"}}})
    with pytest.raises(openai.BadRequestError, match='goes with model "auto"'):
        ask(api.client(), "qa-real", extra_body={"viz": {"route": {"budget": 5}}})
    with pytest.raises(openai.PermissionDeniedError, match="private"):
        ask(api.client(), "secret")
    with pytest.raises(openai.PermissionDeniedError, match="taken down"):
        ask(api.client(), "gone")
    with pytest.raises(openai.RateLimitError) as caught:
        ask(api.client("dan"), "qa-real")
    assert caught.value.code == "insufficient_quota"
    response = httpx.post(
        f"{api.url}/v1/chat/completions",
        json={"model": "qa-real"},
        headers={"Authorization": f"Bearer {api.keys['bob']}"},
    )
    assert response.status_code == 400
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert response.headers["x-request-id"]


def test_an_idempotent_retry_returns_the_first_answer_and_charges_once(api) -> None:
    client = api.client()
    before = api.balance("consumer:bob")
    first = ask(client, "qa-real", extra_headers={"Idempotency-Key": "retry-1"})
    after = api.balance("consumer:bob")
    again = ask(client, "qa-real", extra_headers={"Idempotency-Key": "retry-1"})
    assert (
        again.id == first.id
        and again.choices[0].message.content == first.choices[0].message.content
    )
    assert api.balance("consumer:bob") == after < before


def test_concurrent_requests_share_batches(api) -> None:
    engine_before = [(e.steps, e.rows_decoded) for e in api.app.state.server.engines.values()]
    models = ["qa-real", "mt-real", "smollm2-135m-instruct", "qa-real:0.5+mt-real:0.5"]
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda m: ask(api.client(), m, QUESTIONS[1]), models))
    assert all(a.choices[0].message.content for a in answers)
    (engine,) = api.app.state.server.engines.values()
    steps = engine.steps - engine_before[0][0]
    rows = engine.rows_decoded - engine_before[0][1]
    assert rows > steps, "concurrent requests were decoded in shared batches"


def test_health_metrics_and_openapi(api) -> None:
    assert httpx.get(f"{api.url}/health").json()["status"] == "ok"
    metrics = httpx.get(f"{api.url}/metrics").text
    assert 'viz_requests_total{adapter="qa-real@1.0.0",status="ok"}' in metrics
    spec = httpx.get(f"{api.url}/openapi.json").json()
    assert "/v1/chat/completions" in spec["paths"]


def test_the_async_client_streams_too(api) -> None:
    import asyncio

    async def run() -> str:
        client = openai.AsyncOpenAI(
            base_url=f"{api.url}/v1", api_key=api.keys["bob"], max_retries=0
        )
        stream = await client.chat.completions.create(
            model="qa-real",
            messages=[{"role": "user", "content": QUESTIONS[1]}],
            max_tokens=8,
            temperature=0,
            stream=True,
        )
        return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    assert asyncio.run(run())


def test_every_paid_route_checks_the_key_and_the_adapters_owner(api) -> None:
    from viz.accounts.keys import revoke_api_key

    with session_scope(api.database) as session:
        carol = get_account(session, "carol")
        revoked = create_api_key(session, carol)
        revoke_api_key(session, revoked.key_id)
    body = {"model": "qa-real", "max_tokens": 1, "messages": [{"role": "user", "content": "Hi"}]}
    routes = [
        ("GET", "/v1/models", None),
        ("POST", "/v1/chat/completions", body),
        ("POST", "/v1/completions", {"model": "qa-real", "prompt": "Hi", "max_tokens": 1}),
    ]
    for method, path, payload in routes:
        for headers, status in [
            ({}, 401),
            ({"Authorization": "Bearer nonsense"}, 401),
            ({"Authorization": f"Bearer {revoked.token}"}, 401),
        ]:
            response = httpx.request(method, f"{api.url}{path}", json=payload, headers=headers)
            assert response.status_code == status, (path, headers, response.text)
            assert response.json()["error"]["code"] == "invalid_api_key"
        if payload is not None:
            private = {**payload, "model": "secret"}
            response = httpx.post(
                f"{api.url}{path}",
                json=private,
                headers={"Authorization": f"Bearer {api.keys['bob']}"},
            )
            assert response.status_code == 403
            owner = httpx.post(
                f"{api.url}{path}",
                json=private,
                headers={"Authorization": f"Bearer {api.keys['carol']}"},
            )
            assert owner.status_code in (200, 429), owner.text  # carol may use her own


def test_a_client_that_disconnects_pays_for_what_was_streamed(api) -> None:
    before = api.balance("consumer:bob")
    body = {
        "model": "qa-real",
        "max_tokens": 200,
        "stream": True,
        "messages": [{"role": "user", "content": "Tell me a long story about the sea."}],
    }
    headers = {"Authorization": f"Bearer {api.keys['bob']}"}
    with httpx.stream("POST", f"{api.url}/v1/chat/completions", json=body, headers=headers) as r:
        request_id = r.headers["x-request-id"]
        lines = r.iter_lines()
        received = [next(lines) for _ in range(6)]  # a few chunks, then hang up
    assert any('"content"' in line for line in received)
    deadline = time.monotonic() + 30
    event = None
    while event is None and time.monotonic() < deadline:
        with session_scope(api.database) as session:
            event = session.scalar(select(UsageEvent).where(UsageEvent.request_id == request_id))
        time.sleep(0.1)
    assert event is not None, "the disconnected request was settled"
    assert 1 <= event.tokens_out < 200
    assert api.balance("consumer:bob") == before - event.charge
    with settled(api.database) as session:
        from viz.ledger import verify_ledger

        verify_ledger(session)


def test_requests_defer_anchoring_to_the_keeper_which_anchors_within_seconds(api) -> None:
    from viz.ledger import verify_ledger
    from viz.ledger.transfers import now_us

    body = {"model": "qa-real", "max_tokens": 2, "messages": [{"role": "user", "content": "Hi"}]}
    headers = {"Authorization": f"Bearer {api.keys['bob']}"}
    response = httpx.post(f"{api.url}/v1/chat/completions", json=body, headers=headers, timeout=60)
    assert response.status_code == 200, response.text
    stages = dict(part.split(";dur=") for part in response.headers["server-timing"].split(", "))
    assert {"auth", "resolve", "prepare", "reserve", "generate", "deliver"} <= set(stages)
    assert all(float(ms) >= 0 for ms in stages.values())
    with settled(api.database):  # settled just after the answer, anchored by the keeper
        pass
    deadline = time.monotonic() + 30  # VIZ_LEDGER_ANCHOR_INTERVAL_S is 2 s
    while True:
        with session_scope(api.database) as session:
            report = verify_ledger(session)
        if report.unanchored == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert report.unanchored == 0, "the keeper anchored the request's transfers"
    with session_scope(api.database) as session:  # an hour on, nothing is left unanchored
        verify_ledger(session, now_us=now_us() + 3_600 * 10**6)


def test_a_full_queue_refuses_instead_of_growing(smollm2_record, models_dir) -> None:
    from viz.errors import Overloaded

    loaded = load_model(smollm2_record, models_dir)
    engine = Engine(loaded.model, loaded.tokenizer, batch_max=1, queue_max=1)
    prompt = chat_prompt_ids(
        loaded.tokenizer, [{"role": "user", "content": "Hi"}], prompt_tokens_max=64
    )
    refused = 0
    jobs = []
    try:
        for _ in range(4):
            try:
                jobs.append(engine.submit(prompt, GenerationSettings(max_tokens=30), []))
            except Overloaded:
                refused += 1
    finally:
        for job in jobs:
            job.cancel()
        engine.close()
    assert refused >= 1 and len(jobs) <= 3


def test_random_request_bodies_never_cause_a_server_error(api) -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    scalars = st.one_of(
        st.none(), st.booleans(), st.integers(-3, 3), st.floats(-3, 3), st.text(max_size=8)
    )
    messages = st.lists(
        st.fixed_dictionaries(
            {
                "role": st.sampled_from(["user", "system", "tool", "x", 3]),
                "content": st.one_of(st.text(max_size=12), st.integers()),
            }
        ),
        max_size=3,
    )
    bodies = st.fixed_dictionaries(
        {
            "model": st.sampled_from(
                [
                    "qa-real",
                    "smollm2-135m-instruct",
                    "auto",
                    "",
                    "a+b",
                    "qa-real:9",
                    "qa-real@9.9.9",
                    "secret",
                    7,
                ]
            ),
            "max_tokens": st.one_of(st.integers(-2, 2), st.text(max_size=3)),
        },
        optional={
            "messages": st.one_of(messages, scalars),
            "prompt": scalars,
            "temperature": scalars,
            "top_p": scalars,
            "n": st.integers(-1, 5),
            "stop": st.one_of(scalars, st.lists(st.text(max_size=70), max_size=10)),
            "seed": scalars,
            "stream": st.booleans(),
            "viz": st.one_of(scalars, st.just({})),
        },
    )
    headers = {"Authorization": f"Bearer {api.keys['bob']}"}

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(body=bodies, path=st.sampled_from(["/v1/chat/completions", "/v1/completions"]))
    def check(body, path) -> None:  # type: ignore[no-untyped-def]
        response = httpx.post(f"{api.url}{path}", json=body, headers=headers, timeout=60)
        assert response.status_code < 500, (body, response.text)
        if response.status_code >= 400:
            assert set(response.json()["error"]) == {"message", "type", "param", "code"}

    check()


def test_short_requests_joining_and_leaving_do_not_disturb_the_running_rows(
    adapters, smollm2_record, models_dir
) -> None:
    loaded, prompts, qa, mt = batch_world(adapters, smollm2_record, models_dir)
    tokenizer = loaded.tokenizer
    long = GenerationSettings(max_tokens=24)
    engine = Engine(loaded.model, tokenizer, batch_max=8)
    try:
        alone = [
            "".join(engine.submit(prompts[i], long, mix).pieces())
            for i, mix in ((0, [(qa, 1.0)]), (1, [(mt, 1.0)]))
        ]
        running = [
            engine.submit(prompts[0], long, [(qa, 1.0)]),
            engine.submit(prompts[1], long, [(mt, 1.0)]),
        ]
        short = []
        for _ in range(6):  # each finishes in its prefill, with other adapters or none
            time.sleep(0.05)
            short.append(engine.submit(prompts[2], GenerationSettings(max_tokens=1), [(mt, 0.5)]))
            short.append(engine.submit(prompts[2], GenerationSettings(max_tokens=1), []))
        together = ["".join(job.pieces()) for job in running]
        for job in short:
            "".join(job.pieces())
            assert job.completion_tokens <= 1 and job.finish_reason in ("length", "stop")
    finally:
        engine.close()
    assert together == alone


def idempotency_id(api: Api, key: str) -> str:
    import hashlib

    with session_scope(api.database) as session:
        bob = get_account(session, "bob").id
    return f"idem-{bob}-{hashlib.sha256(key.encode()).hexdigest()[:32]}"


def test_an_idempotency_key_whose_attempt_failed_runs_again_and_charges_once(api) -> None:
    from viz.ledger import reserve, void_reservation

    failed = idempotency_id(api, "retry-after-failure")
    with session_scope(api.database) as session:  # an earlier attempt reserved, then failed
        reserve(session, failed, "bob", 1000)
        void_reservation(session, failed)
    before = api.balance("consumer:bob")
    client = api.client()
    answer = ask(client, "qa-real", extra_headers={"Idempotency-Key": "retry-after-failure"})
    assert answer.id == f"{failed}.1"
    again = ask(client, "qa-real", extra_headers={"Idempotency-Key": "retry-after-failure"})
    assert again.id == answer.id
    charged = before - api.balance("consumer:bob")
    with settled(api.database) as session:
        event = session.scalar(select(UsageEvent).where(UsageEvent.request_id == answer.id))
    assert event is not None and charged == event.charge > 0


def test_an_idempotency_key_still_running_is_refused(api) -> None:
    from viz.ledger import reserve

    running = idempotency_id(api, "in-flight")
    with session_scope(api.database) as session:
        reserve(session, running, "bob", 1000)
    with pytest.raises(openai.ConflictError, match="still running"):
        ask(api.client(), "qa-real", extra_headers={"Idempotency-Key": "in-flight"})


def from_schema(schema):  # type: ignore[no-untyped-def]
    """A hypothesis strategy for the JSON Schema subset pydantic publishes (objects, anyOf,
    arrays, scalars with bounds, enums); hypothesis-jsonschema does not run on this hypothesis."""
    from hypothesis import strategies as st

    if "anyOf" in schema:
        return st.one_of(*[from_schema(option) for option in schema["anyOf"]])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if kind == "object":
        properties = {k: from_schema(v) for k, v in schema.get("properties", {}).items()}
        required = set(schema.get("required", ()))
        return st.fixed_dictionaries(
            {k: v for k, v in properties.items() if k in required},
            optional={k: v for k, v in properties.items() if k not in required},
        )
    if kind == "array":
        return st.lists(
            from_schema(schema.get("items", {})),
            min_size=schema.get("minItems", 0),
            max_size=min(schema.get("maxItems", 3), 3),
        )
    if kind == "integer":
        low = schema.get("minimum", schema.get("exclusiveMinimum", -(10**6) - 1) + 1)
        high = schema.get("maximum", schema.get("exclusiveMaximum", 10**6 + 1) - 1)
        return st.integers(low, high)
    if kind == "number":
        return st.floats(
            schema.get("minimum", schema.get("exclusiveMinimum", -1e6)),
            schema.get("maximum", schema.get("exclusiveMaximum", 1e6)),
            exclude_min="exclusiveMinimum" in schema,
            exclude_max="exclusiveMaximum" in schema,
            allow_nan=False,
        )
    if kind == "string":
        return st.text(max_size=20)
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    return st.one_of(st.none(), st.integers(), st.text(max_size=5))


def _inline_refs(node, components):  # type: ignore[no-untyped-def]
    """The spec's schema with every local `$ref` replaced by what it points to."""
    if isinstance(node, dict):
        if "$ref" in node:
            return _inline_refs(components[node["$ref"].rsplit("/", 1)[-1]], components)
        return {key: _inline_refs(value, components) for key, value in node.items()}
    if isinstance(node, list):
        return [_inline_refs(item, components) for item in node]
    return node


def test_bodies_drawn_from_the_published_openapi_spec_never_cause_a_server_error(api) -> None:
    """On adapters and a composition (tests/test_api_schema.py runs schemathesis on the base)."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    spec = httpx.get(f"{api.url}/openapi.json").json()
    components = spec["components"]["schemas"]
    headers = {"Authorization": f"Bearer {api.keys['bob']}"}
    routes = {"/v1/chat/completions": "ChatBody", "/v1/completions": "TextBody"}
    assert all(
        spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        == {"$ref": f"#/components/schemas/{name}"}
        for path, name in routes.items()
    ), "the routes publish the schemas this test draws from"

    def cheap(body: dict) -> dict:  # type: ignore[type-arg]
        """Keep generation short: the spec allows any max_tokens, CI time does not."""
        body = dict(body)
        for field in ("max_tokens", "max_completion_tokens"):
            if isinstance(body.get(field), int):
                body[field] = min(body[field], 2)
        if "max_tokens" not in body and "max_completion_tokens" not in body:
            body["max_tokens"] = 1
        if isinstance(body.get("n"), int):
            body["n"] = min(body["n"], 2)
        # Long drawn texts only make the prefill slow (prompt limits are tested on their own).
        if isinstance(body.get("messages"), list):
            body["messages"] = [
                {**m, "content": m["content"][:200]}
                if isinstance(m, dict) and isinstance(m.get("content"), str)
                else m
                for m in body["messages"]
            ]
        if isinstance(body.get("prompt"), str):
            body["prompt"] = body["prompt"][:200]
        return body

    cases = st.one_of(
        *[
            st.tuples(st.just(path), from_schema(_inline_refs(components[name], components)))
            for path, name in routes.items()
        ]
    )

    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
    @given(case=cases, model=st.sampled_from(["qa-real", "smollm2-135m-instruct", "mt-real:0.5"]))
    def check(case, model) -> None:  # type: ignore[no-untyped-def]
        path, body = case
        body = cheap({**body, "model": model} if "model" in body else body)
        response = httpx.post(f"{api.url}{path}", json=body, headers=headers, timeout=120)
        assert response.status_code < 500, (path, body, response.text)
        if response.status_code >= 400:
            assert set(response.json()["error"]) == {"message", "type", "param", "code"}

    check()


def test_a_child_adapter_brings_its_parent_unless_told_not_to(api) -> None:
    from viz.store.schema import Adapter

    with session_scope(api.database) as session:
        parent = session.scalar(select(Adapter).where(Adapter.name == "mt-real"))
        child_version = register(
            session, api.settings.blobs_dir, _folder(api, "qa"), "qa-child", "ada"
        )
        child = session.get(AdapterVersion, child_version).adapter
        child.parent_id = parent.id
    with_parent = ask(api.client(), "qa-child")
    assert with_parent.model == "mt-real@1.0.0:1+qa-child@1.0.0:1"
    alone = ask(api.client(), "qa-child", extra_body={"viz": {"parents": False}})
    assert alone.model == "qa-child@1.0.0:1"


def _folder(api: Api, name: str) -> Path:
    return api.adapter_folders[name]


def test_the_adapter_cache_is_bounded_by_bytes_least_recent_out() -> None:
    from viz.serving.engines.builtin import AdapterSlots
    from viz.serving.engines.lora import LoadedAdapter

    def adapter(version_id: int, size: int) -> LoadedAdapter:
        return LoadedAdapter(version_id, f"a{version_id}", 8, 2.0, {}, size)

    slots = AdapterSlots(bytes_max=250)
    for version_id in (1, 2):
        slots.get(version_id, lambda v=version_id: adapter(v, 100))
    slots.get(1, lambda: adapter(1, 100))  # 1 is now the most recent
    slots.get(3, lambda: adapter(3, 100))  # over 250 bytes: 2 goes
    assert slots.resident() == ["a1", "a3"] and slots.evictions == 1 and slots.loads == 3


def test_an_adapter_trained_on_nf4_is_served_on_the_nf4_base(api) -> None:
    import json

    from viz.serving.resolve import resolve

    with session_scope(api.database) as session:
        version_id = register(
            session, api.settings.blobs_dir, _folder(api, "mt"), "mt-nf4", "carol"
        )
        session.get(AdapterVersion, version_id).manifest_json = json.dumps(
            {"base": {"id": "smollm2-135m-instruct", "precision": "nf4"}}
        )
        session.flush()
        resolved = resolve(session, parse_model("mt-nf4"), get_account(session, "bob"))
    assert (resolved.base_id, resolved.precision) == ("smollm2-135m-instruct", "nf4")
