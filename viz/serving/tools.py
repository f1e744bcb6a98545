"""Tool calling: function definitions into the prompt, calls out of the answer.

The definitions are rendered by the base's chat template when it takes `tools`. A ChatML base
whose template does not (SmolLM2's) is rendered with `CHATML_TOOLS`, the Hermes format that
ChatML tool models use (Qwen2.5's layout): tools listed in the system turn, each call written
as `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`, results in `<tool_response>`.
Any other template cannot express tools: 400.

    use = tool_use(body)                          # None without tools or with tool_choice none
    ids = prompt_ids(tokenizer, messages, use, prompt_tokens_max=4096)
    schema = call_schema(use)                     # required / a named function: constrained
    content, calls = parse_calls(text, use)       # calls validate against their parameters

With `required` or a named function the prompt ends with `<tool_call>\\n` and the answer is
decoded under the JSON schema of one call, so it always parses and validates; with `auto` the
model chooses, and only calls that parse and validate become `tool_calls` (else: content).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import jsonschema

from viz.errors import InvalidInput
from viz.models.generate import chat_prompt_ids
from viz.serving.options import canonical
from viz.serving.protocol import ChatBody

__all__ = ["CHATML_TOOLS", "ToolUse", "call_schema", "parse_calls", "prompt_ids", "tool_use"]

CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
ANY_PARAMETERS: dict[str, Any] = {"type": "object"}

CHATML_TOOLS = """\
{%- if tools %}
{{- '<|im_start|>system\\n' }}
{%- if messages[0]['role'] == 'system' %}{{- messages[0]['content'] }}
{%- else %}{{- 'You are a helpful assistant.' }}{%- endif %}
{{- '\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n' }}
{{- 'You are provided with function signatures within <tools></tools> XML tags:\\n<tools>' }}
{%- for tool in tools %}{{- '\\n' }}{{- tool | tojson }}{%- endfor %}
{{- '\\n</tools>\\n\\nFor each function call, return a json object with function name and ' }}
{{- 'arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n' }}
{{- '{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n' }}
{{- '</tool_call><|im_end|>\\n' }}
{%- elif messages[0]['role'] == 'system' %}
{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
{%- endif %}
{%- for message in messages %}
{%- if message.role == 'user' or (message.role == 'system' and not loop.first) %}
{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}
{%- elif message.role == 'assistant' %}
{{- '<|im_start|>assistant' }}
{%- if message.content %}{{- '\\n' + message.content }}{%- endif %}
{%- for call in message.tool_calls or [] %}
{%- set call = call.function if call.function is defined else call %}
{{- '\\n<tool_call>\\n{"name": "' + call.name + '", "arguments": ' }}
{{- call.arguments | tojson }}{{- '}\\n</tool_call>' }}
{%- endfor %}
{{- '<|im_end|>\\n' }}
{%- elif message.role == 'tool' %}
{%- if loop.first or messages[loop.index0 - 1].role != 'tool' %}
{{- '<|im_start|>user' }}{%- endif %}
{{- '\\n<tool_response>\\n' + message.content + '\\n</tool_response>' }}
{%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}{{- '<|im_end|>\\n' }}
{%- endif %}
{%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}
"""


@dataclass(frozen=True)
class ToolUse:
    """The request's functions and how the model may call them."""

    functions: tuple[dict[str, Any], ...]  # {"name", "description", "parameters"}
    choice: str  # "auto", "required", or the one function's name
    parallel: bool

    @property
    def forced(self) -> bool:
        return self.choice != "auto"

    def parameters(self, name: str) -> dict[str, Any] | None:
        for function in self.functions:
            if function["name"] == name:
                return function.get("parameters") or ANY_PARAMETERS
        return None


def tool_use(body: ChatBody) -> ToolUse | None:
    """The tools of `body`, checked; None when there are none or `tool_choice` is "none".

    Raises:
        InvalidInput: tool_choice without tools, an unknown named function, two functions of
            one name, or parameters that are not a valid JSON schema.
    """
    choice = body.tool_choice
    if not body.tools:
        if choice not in (None, "none"):
            raise InvalidInput("tool_choice needs tools: list the functions the model may call")
        return None
    if choice == "none":
        return None
    functions = []
    for tool in body.tools:
        function = tool.function.model_dump(exclude_none=True)
        parameters = function.get("parameters", ANY_PARAMETERS)
        try:
            jsonschema.validators.validator_for(parameters).check_schema(parameters)
        except Exception as error:  # noqa: BLE001 - SchemaError, or an unresolvable $ref
            reason = error.message if isinstance(error, jsonschema.SchemaError) else error
            raise InvalidInput(
                f"tools: {function['name']}'s parameters are not a valid JSON schema: {reason}"
            ) from error
        functions.append(function)
    names = [function["name"] for function in functions]
    if len(set(names)) < len(names):
        raise InvalidInput("tools: two functions have the same name; names must be unique")
    named = choice if isinstance(choice, str) or choice is None else choice.function.name
    if named not in (None, "auto", "required") and named not in names:
        raise InvalidInput(f"tool_choice names {named!r}, which is not among tools ({names})")
    return ToolUse(tuple(functions), named or "auto", body.parallel_tool_calls)


def prompt_ids(
    tokenizer: Any,
    messages: list[dict[str, Any]],
    use: ToolUse | None,
    *,
    prompt_tokens_max: int,
) -> list[int]:
    """The prompt's token ids, with the tools (and earlier calls and results) rendered in; for
    a forced call, ending where the call's JSON begins.

    Raises:
        InvalidInput: the base's chat template cannot express tools.
    """
    with_tools = use is not None or any(
        m["role"] == "tool" or m.get("tool_calls") for m in messages
    )
    if not with_tools:
        return chat_prompt_ids(tokenizer, messages, prompt_tokens_max=prompt_tokens_max)
    template = _tools_template(tokenizer)
    turns = [_with_parsed_arguments(m, index) for index, m in enumerate(messages)]
    tools = [{"type": "function", "function": f} for f in use.functions] if use else None
    ids = chat_prompt_ids(
        tokenizer,
        turns,
        prompt_tokens_max=prompt_tokens_max,
        chat_template=template,
        tools=tools,
    )
    if use is not None and use.forced:
        ids = ids + list(tokenizer(f"{CALL_OPEN}\n", add_special_tokens=False)["input_ids"])
    return ids


def _tools_template(tokenizer: Any) -> str:
    own = tokenizer.chat_template or ""
    if "tools" in own:
        return own
    if "<|im_start|>" in own:
        return CHATML_TOOLS
    raise InvalidInput(
        "this base's chat template cannot express tools (it neither takes tools nor is "
        "ChatML); use a base whose template does, or describe the functions in a message"
    )


def _with_parsed_arguments(message: dict[str, Any], index: int) -> dict[str, Any]:
    """A turn whose tool calls carry their arguments as objects (templates print them)."""
    if not message.get("tool_calls"):
        return message
    calls = []
    for call in message["tool_calls"]:
        function = dict(call.get("function") or {})
        arguments = function.get("arguments", "{}")
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments or "{}")
            except ValueError as error:
                raise InvalidInput(
                    f"messages[{index}].tool_calls: the arguments of "
                    f"{function.get('name')!r} are not JSON ({error})"
                ) from error
        if "name" not in function:
            raise InvalidInput(f"messages[{index}].tool_calls: a call without a function name")
        calls.append({**call, "function": {**function, "arguments": arguments}})
    return {**message, "tool_calls": calls}


def call_schema(use: ToolUse | None) -> str | None:
    """For a forced call: the JSON schema of one call (the named function's, or any of
    them), as canonical text; None when the model chooses."""
    if use is None or not use.forced:
        return None
    chosen = [f for f in use.functions if use.choice in ("required", f["name"])]
    options = [
        {
            "type": "object",
            "properties": {
                "name": {"const": f["name"]},
                "arguments": f.get("parameters") or ANY_PARAMETERS,
            },
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for f in chosen
    ]
    schema = options[0] if len(options) == 1 else {"anyOf": options}
    return canonical(schema, what="tools")


def parse_calls(text: str, use: ToolUse) -> tuple[str | None, list[dict[str, Any]]]:
    """The answer's content and its tool calls (OpenAI's shape, arguments as JSON text).
    Only calls that parse and whose arguments validate count; if any does not, the whole
    answer is content. A forced call's answer is the call's JSON itself."""
    if use.forced:
        blocks, content = [text], None
    else:
        start = text.find(CALL_OPEN)
        if start < 0:
            return text, []
        content = text[:start].strip() or None
        blocks = [block.split(CALL_CLOSE, 1)[0] for block in text[start:].split(CALL_OPEN)[1:]]
    calls = []
    for block in blocks:
        call = _call(block, use)
        if call is None:
            return text, []
        calls.append(call)
    if not use.parallel:
        calls = calls[:1]
    return content, calls


def _call(block: str, use: ToolUse) -> dict[str, Any] | None:
    try:
        parsed = json.loads(block.strip())
    except ValueError:
        return None
    if not isinstance(parsed, dict) or not isinstance(parsed.get("name"), str):
        return None
    parameters = use.parameters(parsed["name"])
    arguments = parsed.get("arguments", {})
    if parameters is None or not isinstance(arguments, dict):
        return None
    try:
        jsonschema.validate(arguments, parameters)
    except Exception:  # noqa: BLE001 - invalid arguments, or a schema that cannot be applied
        return None
    return {
        "id": f"call_{uuid.uuid4().hex[:24]}",
        "type": "function",
        "function": {"name": parsed["name"], "arguments": json.dumps(arguments)},
    }
