"""Tool calling without a server: how tools, calls and results are rendered into the prompt,
and which answers become calls (only those that parse and validate)."""

from __future__ import annotations

import copy
import json

import pytest

from viz.errors import InvalidInput
from viz.serving.protocol import ChatBody
from viz.serving.tools import ToolUse, call_schema, parse_calls, prompt_ids, tool_use

WEATHER = {
    "name": "get_weather",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
AUTO = ToolUse((WEATHER,), "auto", parallel=True)


def body(**fields) -> ChatBody:  # type: ignore[no-untyped-def]
    return ChatBody(model="m", messages=[{"role": "user", "content": "hi"}], **fields)


def test_tools_and_earlier_calls_and_results_are_rendered_in_chatml(tokenizer) -> None:
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "21 C"},
    ]
    text = tokenizer.decode(prompt_ids(tokenizer, messages, AUTO, prompt_tokens_max=4096))
    assert (
        '"name": "get_weather"' in text.split("\n</tools>")[0]
    )  # the definition, in the system turn
    assert (
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>' in text
    )
    assert "<tool_response>\n21 C\n</tool_response>" in text
    assert text.endswith("<|im_start|>assistant\n")
    forced = ToolUse((WEATHER,), "get_weather", parallel=True)
    text = tokenizer.decode(prompt_ids(tokenizer, messages[:1], forced, prompt_tokens_max=4096))
    assert text.endswith("<|im_start|>assistant\n<tool_call>\n")


def test_a_template_that_cannot_express_tools_is_refused(tokenizer) -> None:
    other = copy.deepcopy(tokenizer)
    other.chat_template = "{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}"
    with pytest.raises(InvalidInput, match="cannot express tools"):
        prompt_ids(other, [{"role": "user", "content": "hi"}], AUTO, prompt_tokens_max=4096)


def test_only_calls_that_parse_and_validate_become_calls() -> None:
    good = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome"}}\n</tool_call>'
    content, calls = parse_calls("Let me check. " + good + good, AUTO)
    assert content == "Let me check." and len(calls) == 2
    assert json.loads(calls[0]["function"]["arguments"]) == {"city": "Rome"}
    single = ToolUse((WEATHER,), "auto", parallel=False)
    assert len(parse_calls(good + good, single)[1]) == 1
    for broken in (
        '<tool_call>{"name": "get_weather", "arguments": {"town": "Rome"}}</tool_call>',  # invalid
        '<tool_call>{"name": "nope", "arguments": {}}</tool_call>',  # unknown function
        "<tool_call>{not json</tool_call>",
        "It is sunny.",
    ):
        assert parse_calls(broken, AUTO) == (broken, [])


def test_a_forced_call_is_decoded_under_its_schema() -> None:
    schema = json.loads(call_schema(ToolUse((WEATHER,), "required", parallel=True)) or "")
    assert schema["properties"]["name"] == {"const": "get_weather"}
    assert schema["properties"]["arguments"] == WEATHER["parameters"]
    assert call_schema(AUTO) is None


def test_tool_choice_mistakes_are_refused() -> None:
    weather = {"type": "function", "function": WEATHER}
    with pytest.raises(InvalidInput, match="needs tools"):
        tool_use(body(tool_choice="auto"))
    with pytest.raises(InvalidInput, match="not among tools"):
        tool_use(body(tools=[weather], tool_choice={"type": "function", "function": {"name": "x"}}))
    with pytest.raises(InvalidInput, match="same name"):
        tool_use(body(tools=[weather, weather]))
    bad = {"type": "function", "function": {"name": "f", "parameters": {"type": "nope"}}}
    with pytest.raises(InvalidInput, match="not a valid JSON schema"):
        tool_use(body(tools=[bad]))
    assert tool_use(body(tools=[weather], tool_choice="none")) is None
