"""The OpenAI API as clients call it, with the official `openai` client over real HTTP, on a
fresh home (no adapter, no reranker): content parts, logprobs, penalties, echo, logit bias,
structured output, tools, model lookup, embeddings, and every unknown field refused."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import jsonschema
import openai
import pytest

from viz.accounts import create_account, create_api_key
from viz.config import Settings
from viz.ledger import balances, topup
from viz.store import open_database, session_scope
from worlds.serving import run_server, settled

pytestmark = pytest.mark.model

BASE = "smollm2-135m-instruct"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


class Api:
    def __init__(self, url: str, key: str, database: Any) -> None:
        self.url, self.key, self.database = url, key, database
        self.client = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)

    def balance(self) -> int:
        with settled(self.database) as session:
            return balances(session, "consumer:bob")[0].posted


@pytest.fixture(scope="module")
def api(tmp_path_factory, models_dir) -> Iterator[Api]:  # type: ignore[no-untyped-def]
    from viz.app import create_app

    home = tmp_path_factory.mktemp("fresh-home")
    (home / "models").symlink_to(models_dir, target_is_directory=True)
    settings = Settings(home=home)
    database = open_database(settings.database_url_resolved)
    with session_scope(database) as session:  # no base row yet: serving must add it
        bob = create_account(session, "bob")
        topup(session, "bob", 10_000_000, transfer_id="bob-funds")
        key = create_api_key(session, bob).token
    with run_server(create_app(settings, database)) as url:
        yield Api(url, key, database)
    database.dispose()


def chat(api: Api, **options: Any) -> Any:
    body = {"model": BASE, "messages": QUESTION, "max_tokens": 12, "temperature": 0, **options}
    return api.client.chat.completions.create(**body)


def bad_request(call: Any) -> str:
    with pytest.raises(openai.BadRequestError) as refused:
        call()
    return str(refused.value.body["message"])  # type: ignore[index]


def test_a_fresh_home_lists_the_base_and_answers_for_it(api) -> None:
    ids = [model.id for model in api.client.models.list().data]
    assert BASE in ids
    assert chat(api).choices[0].message.content


def test_text_parts_are_joined_and_other_parts_refused_by_type(api) -> None:
    parts = [
        {"type": "text", "text": "What is the capital"},
        {"type": "text", "text": "of France?"},
    ]
    answer = chat(api, messages=[{"role": "user", "content": parts}])
    joined = chat(api, messages=[{"role": "user", "content": "What is the capital\nof France?"}])
    assert answer.choices[0].message.content == joined.choices[0].message.content
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    message = bad_request(lambda: chat(api, messages=[{"role": "user", "content": [image]}]))
    assert "image_url" in message and "text only" in message


def test_chat_logprobs_give_each_token_its_bytes_and_alternatives(api) -> None:
    answer = chat(api, logprobs=True, top_logprobs=3)
    content = answer.choices[0].logprobs.content
    assert len(content) == answer.usage.completion_tokens
    text = b"".join(bytes(entry.bytes) for entry in content).decode()
    assert text.strip() == answer.choices[0].message.content.strip()
    for entry in content:
        assert entry.logprob <= 0 and len(entry.top_logprobs) == 3
        # greedy: the chosen token is the most likely one
        assert math.isclose(entry.logprob, entry.top_logprobs[0].logprob, abs_tol=1e-4)
    streamed = chat(api, logprobs=True, top_logprobs=1, stream=True)
    tokens = [
        e.token
        for c in streamed
        if c.choices and c.choices[0].logprobs
        for e in c.choices[0].logprobs.content
    ]
    assert tokens == [entry.token for entry in content]


def test_completions_echo_the_prompt_with_logprobs(api) -> None:
    prompt = "The capital of France is"
    answer = api.client.completions.create(
        model=BASE, prompt=prompt, max_tokens=4, temperature=0, echo=True, logprobs=2
    )
    choice = answer.choices[0]
    assert choice.text.startswith(prompt)
    logprobs = choice.logprobs
    assert logprobs.token_logprobs[0] is None  # the first prompt token has nothing before it
    assert "".join(logprobs.tokens) == choice.text
    assert logprobs.text_offset[1] == len(logprobs.tokens[0])
    assert all(len(top) == 2 for top in logprobs.top_logprobs[1:])


def test_penalties_and_logit_bias_change_the_answer(api, tokenizer) -> None:
    counting = [{"role": "user", "content": "Count from 1 to 20, separated by commas."}]
    plain = chat(api, messages=counting, max_tokens=24).choices[0].message.content
    for options in (
        {"frequency_penalty": 2.0},  # presence's exact effect: test_generate's unit test
        {"extra_body": {"viz": {"repetition_penalty": 2.0}}},
    ):
        penalised = chat(api, messages=counting, max_tokens=24, **options)
        assert penalised.choices[0].message.content != plain, options
    first = chat(api, logprobs=True).choices[0].logprobs.content[0]
    first_id = tokenizer.convert_tokens_to_ids(first.token.replace(" ", "Ġ"))
    banned = chat(api, logit_bias={str(first_id): -100}, logprobs=True)
    assert banned.choices[0].logprobs.content[0].token != first.token
    assert "vocabulary" in bad_request(lambda: chat(api, logit_bias={"999999": 5}))
    # a digit int() refuses (found by the schema fuzzer): a 400, not a 500
    assert "not a token id" in bad_request(lambda: chat(api, logit_bias={"\u00b9": 5}))


def test_stop_strings_up_to_four(api) -> None:
    answer = chat(api, stop=["Paris", "paris", "PARIS", "capital"], max_tokens=24)
    assert "Paris" not in answer.choices[0].message.content
    message = bad_request(lambda: chat(api, stop=["a", "b", "c", "d", "e"]))
    assert "stop strings" in message


SCHEMAS = {
    "flat": {
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 20},
            "population": {"type": "integer", "minimum": 0, "maximum": 99999999},
        },
        "required": ["city", "population"],
        "additionalProperties": False,
    },
    "nested with an array of objects": {
        "type": "object",
        "properties": {
            "country": {"type": "string", "maxLength": 20},
            "cities": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"name": {"type": "string", "maxLength": 20}},
                    "required": ["name"],
                    "additionalProperties": False,
                },
                "minItems": 1,
                "maxItems": 2,
            },
        },
        "required": ["country", "cities"],
        "additionalProperties": False,
    },
    "an enum and an array of strings": {
        "type": "object",
        "properties": {
            "answer": {"enum": ["yes", "no", "unsure"]},
            "reasons": {
                "type": "array",
                "items": {"type": "string", "maxLength": 16},
                "maxItems": 2,
            },
        },
        "required": ["answer", "reasons"],
        "additionalProperties": False,
    },
}


@pytest.mark.parametrize("name", SCHEMAS)
def test_json_schema_answers_always_parse_and_validate(api, name) -> None:
    schema = SCHEMAS[name]
    answer = chat(
        api,
        max_tokens=96,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "a", "schema": schema, "strict": True},
        },
    )
    assert answer.choices[0].finish_reason == "stop"  # complete: the grammar ended it
    jsonschema.validate(json.loads(answer.choices[0].message.content), schema)


def test_json_object_answers_are_objects_and_bad_schemas_are_refused(api) -> None:
    answer = chat(api, max_tokens=64, response_format={"type": "json_object"})
    assert isinstance(json.loads(answer.choices[0].message.content), dict)
    bad = {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "strin"}}}
    assert "JSON schema" in bad_request(lambda: chat(api, response_format=bad))
    unsupported = {"type": "json_schema", "json_schema": {"name": "a", "schema": {"not": {}}}}
    assert '"not"' in bad_request(lambda: chat(api, response_format=unsupported))


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 30},
                "unit": {"enum": ["c", "f"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}


def test_a_required_tool_call_validates_and_its_result_is_taken_next_turn(api) -> None:
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    answer = chat(api, messages=messages, tools=[WEATHER], tool_choice="required", max_tokens=48)
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"
    jsonschema.validate(json.loads(call.function.arguments), WEATHER["function"]["parameters"])
    follow = [
        *messages,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 21}'},
    ]
    answer = chat(api, messages=follow, tools=[WEATHER], max_tokens=16)
    assert answer.choices[0].message.content or answer.choices[0].message.tool_calls


def test_a_named_tool_call_streams_as_deltas(api) -> None:
    named = {"type": "function", "function": {"name": "get_weather"}}
    chunks = list(chat(api, tools=[WEATHER], tool_choice=named, max_tokens=48, stream=True))
    calls = [d for c in chunks if c.choices for d in (c.choices[0].delta.tool_calls or [])]
    assert calls and calls[0].function.name == "get_weather"
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_tool_mistakes_are_refused_with_the_reason(api) -> None:
    named = {"type": "function", "function": {"name": "nope"}}
    assert "nope" in bad_request(lambda: chat(api, tools=[WEATHER], tool_choice=named))
    assert "needs tools" in bad_request(lambda: chat(api, tool_choice="required"))


def test_every_field_viz_does_not_implement_is_refused_by_name(api) -> None:
    for field, value in [
        ("audio", {"voice": "alloy", "format": "wav"}),
        ("reasoning_effort", "low"),
        ("made_up", 1),
    ]:
        message = bad_request(lambda f=field, v=value: chat(api, extra_body={f: v}))
        assert field in message and "not supported" in message
    assert "store" in bad_request(lambda: chat(api, store=True))
    accepted = chat(api, user="someone", metadata={"team": "a"}, store=False, service_tier="auto")
    assert accepted.choices[0].message.content


def test_every_listed_model_can_be_retrieved_and_a_composition_normalised(api) -> None:
    listed = api.client.models.list().data
    assert {"auto", "all-minilm-l6-v2", BASE} <= {model.id for model in listed}
    for model in listed:
        assert api.client.models.retrieve(model.id).id == model.id
    with pytest.raises(openai.NotFoundError):
        api.client.models.retrieve("no-such-adapter")


def test_embeddings_are_unit_vectors_metered_per_input_token(api) -> None:
    before = api.balance()
    texts = ["What is QLoRA?", "Low-rank adapters on a 4-bit base"]
    result = api.client.embeddings.create(model="all-minilm-l6-v2", input=texts)  # base64
    floats = api.client.embeddings.create(
        model="all-minilm-l6-v2", input=texts, encoding_format="float"
    )
    assert len(result.data) == 2 and len(result.data[0].embedding) == 384
    assert math.isclose(sum(v * v for v in result.data[0].embedding), 1.0, rel_tol=1e-3)
    assert all(
        math.isclose(a, b, abs_tol=1e-6)
        for a, b in zip(result.data[1].embedding, floats.data[1].embedding, strict=True)
    )
    tokens = result.usage.prompt_tokens
    assert tokens > 0
    assert before - api.balance() == 2 * math.ceil(tokens * 20 / 1000)  # VIZ_EMBEDDINGS_PRICE
    assert "empty" in bad_request(
        lambda: api.client.embeddings.create(model="all-minilm-l6-v2", input=[" "])
    )
    assert "text" in bad_request(
        lambda: api.client.embeddings.create(model="all-minilm-l6-v2", input=[[1, 2]])
    )
    with pytest.raises(openai.NotFoundError):
        api.client.embeddings.create(model="nope", input="hi")
    assert api.balance() == before - 2 * math.ceil(tokens * 20 / 1000)  # refusals cost nothing
