"""OpenAI Chat Completions JSON → ``GenerateRequest``: messages, sampling, tools and ``tool_choice``,
structured output (``response_format``, SGLang's ``regex``/``ebnf``), reasoning options."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from adapters import params
from dataplane import constraints
from dataplane.errors import InvalidRequest, UnsupportedParameter
from dataplane.types import Constraint, GenerateRequest, ToolChoice

_ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
ALLOWED = params.SAMPLING_KEYS | {
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "logprobs",
    "top_logprobs",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "chat_template_kwargs",
    "response_format",
    "continue_final_message",
    "add_generation_prompt",
    "separate_reasoning",
    "stream_reasoning",
    "regex",
    "ebnf",
}
UNSUPPORTED = {
    "audio": "audio output is not supported",
    "modalities": "only text output is supported",
    "prediction": "predicted outputs are not supported",
    "web_search_options": "web search is not supported",
    "functions": "use 'tools' instead of the deprecated 'functions'",
    "function_call": "use 'tool_choice' instead of the deprecated 'function_call'",
    "best_of": "best_of is not supported for chat",
    "reasoning_effort": "not supported yet; pass chat_template_kwargs (e.g. enable_thinking) instead",
    "service_tier": "service tiers are not supported",
    "store": "storing chat completions is not supported",
    "metadata": "metadata is only stored with 'store', which is not supported",
}


@dataclass(frozen=True, slots=True)
class ChatRequest:
    generate: GenerateRequest
    include_usage: bool
    stream_reasoning: bool = True  # False: a choice's reasoning leaves in one chunk, once it is complete


def parse_chat(
    body: Mapping[str, Any],
    request_id: str,
    trace: Mapping[str, str],
    *,
    routing_key: str | None = None,
    target_worker: str | None = None,
) -> ChatRequest:
    params.reject_unknown(body, ALLOWED, UNSUPPORTED)
    tools, tool_choice = _tools(body)
    constraint = _constraint(body)
    logprobs = params.get(body, "logprobs", bool, False)
    top_logprobs = params.integer(body, "top_logprobs", 0, 20) or 0
    if top_logprobs and not logprobs:
        raise InvalidRequest("'top_logprobs' requires 'logprobs' to be true", param="top_logprobs")
    max_tokens = params.integer(body, "max_completion_tokens", 1)
    if max_tokens is None:
        max_tokens = params.integer(body, "max_tokens", 1)
    kwargs = params.get(body, "chat_template_kwargs", dict, {})
    generate = GenerateRequest(
        request_id=request_id,
        model=params.model_name(body),
        sampling=params.sampling(body, max_tokens=max_tokens, logprobs=logprobs, top_logprobs=top_logprobs),
        messages=_messages(body),
        tools=tools,
        tool_choice=tool_choice,
        parallel_tool_calls=params.get(body, "parallel_tool_calls", bool, True),
        constraint=constraint,
        separate_reasoning=params.get(body, "separate_reasoning", bool, True),
        chat_template_kwargs=kwargs,
        add_generation_prompt=params.get(body, "add_generation_prompt", bool, True),
        continue_final_message=params.get(body, "continue_final_message", bool, False),
        stream=params.get(body, "stream", bool, False),
        trace_carrier=trace,
        routing_key=routing_key,
        target_worker=target_worker,
    )
    stream_reasoning = params.get(body, "stream_reasoning", bool, True)
    return ChatRequest(generate, params.include_usage(body), stream_reasoning)


def _messages(body: Mapping[str, Any]) -> tuple[dict[str, Any], ...]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty list", param="messages")
    return tuple(_message(m, i) for i, m in enumerate(messages))


def _message(message: object, i: int) -> dict[str, Any]:
    where = f"messages[{i}]"
    if not isinstance(message, dict):
        raise InvalidRequest(f"{where} must be an object", param=where)
    role = message.get("role")
    if role not in _ROLES:
        raise InvalidRequest(
            f"{where}.role must be one of {', '.join(sorted(_ROLES))}", param=f"{where}.role"
        )
    out = {k: v for k, v in message.items() if v is not None}
    out["role"] = "system" if role == "developer" else role
    content = message.get("content")
    if content is None and not (role == "assistant" and message.get("tool_calls")):
        raise InvalidRequest(f"{where}.content is required", param=f"{where}.content")
    out["content"] = _text_content(content, where) if content is not None else ""
    return out


def _text_content(content: object, where: str) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise InvalidRequest(f"{where}.content must be a string or a list of parts", param=f"{where}.content")
    texts = []
    for part in content:
        if not isinstance(part, dict) or "type" not in part:
            raise InvalidRequest(
                f"{where}.content parts must be objects with a 'type'", param=f"{where}.content"
            )
        if part["type"] not in ("text", "input_text"):
            raise UnsupportedParameter(
                f"{where}: content part type {part['type']!r} is not supported (text only)",
                param=f"{where}.content",
            )
        if not isinstance(part.get("text"), str):
            raise InvalidRequest(f"{where}: a text part needs a string 'text'", param=f"{where}.content")
        texts.append(part["text"])
    return "".join(texts)


def _tools(body: Mapping[str, Any]) -> tuple[tuple[dict[str, Any], ...], ToolChoice]:
    """The tools the template gets, and the parsed ``tool_choice`` (SMG's rules: a choice other than
    ``none`` needs tools; a named function must be one of them and is the only one rendered). OpenAI's
    ``allowed_tools`` narrows the tools to its list: only those are rendered, so the model cannot call
    another, and ``mode`` is ``auto`` or ``required`` over them."""
    tools = params.get(body, "tools", list, [])
    names = [_tool_name(tool, i) for i, tool in enumerate(tools)]
    choice, allowed = _tool_choice(body.get("tool_choice"))
    if body.get("tool_choice") not in (None, "none") and not tools:
        raise InvalidRequest("'tool_choice' is only allowed when 'tools' are specified", param="tool_choice")
    if choice.mode == "none":
        return (), choice
    if choice.mode == "function":
        allowed = (str(choice.function),)
    if allowed is None:
        return tuple(tools), choice
    if missing := [name for name in allowed if name not in names]:
        raise InvalidRequest(
            f"Invalid value for 'tool_choice': function {missing[0]!r} not found in 'tools'",
            param="tool_choice",
        )
    return tuple(t for t, name in zip(tools, names, strict=True) if name in allowed), choice


def _tool_name(tool: object, i: int) -> str:
    function = tool.get("function") if isinstance(tool, dict) else None
    if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(function, dict):
        raise InvalidRequest(f"tools[{i}] must be {{'type': 'function', 'function': {{...}}}}", param="tools")
    name = function.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidRequest(f"tools[{i}].function.name is required", param="tools")
    if not isinstance(function.get("parameters", {}), dict | None):
        raise InvalidRequest(f"tools[{i}].function.parameters must be a JSON schema object", param="tools")
    return name


def _tool_choice(value: object) -> tuple[ToolChoice, tuple[str, ...] | None]:
    """The choice, and the names ``allowed_tools`` narrows the tools to (``None``: all of them)."""
    if value is None or value == "auto":
        return ToolChoice("auto"), None
    if value in ("none", "required"):
        return ToolChoice(value), None
    if isinstance(value, dict) and value.get("type") == "function":
        function = value.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        if isinstance(name, str) and name:
            return ToolChoice("function", name), None
    if isinstance(value, dict) and value.get("type") == "allowed_tools":
        return _allowed_tools(value.get("allowed_tools"))
    raise InvalidRequest(
        "'tool_choice' must be 'none', 'auto', 'required', {'type': 'function', 'function': {'name': ...}} "
        "or {'type': 'allowed_tools', 'allowed_tools': {'mode': ..., 'tools': [...]}}",
        param="tool_choice",
    )


def _allowed_tools(spec: object) -> tuple[ToolChoice, tuple[str, ...]]:
    shape = "{'mode': 'auto' | 'required', 'tools': [{'type': 'function', 'function': {'name': ...}}, ...]}"
    if not isinstance(spec, dict) or spec.get("mode") not in ("auto", "required"):
        raise InvalidRequest(f"tool_choice.allowed_tools must be {shape}", param="tool_choice")
    entries = spec.get("tools")
    names = []
    for entry in entries if isinstance(entries, list) else ():
        function = entry.get("function") if isinstance(entry, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(entry, dict) or entry.get("type") != "function" or not isinstance(name, str):
            raise InvalidRequest(f"tool_choice.allowed_tools must be {shape}", param="tool_choice")
        names.append(name)
    if not names:
        raise InvalidRequest(
            "tool_choice.allowed_tools.tools must name at least one tool", param="tool_choice"
        )
    return ToolChoice(spec["mode"]), tuple(names)


def _constraint(body: Mapping[str, Any]) -> Constraint | None:
    """The client's structured-output constraint: ``response_format`` or SGLang's ``regex``/``ebnf``;
    at most one of them (SMG)."""
    found = [c for c in (_response_format(body), *sglang_constraints(body)) if c is not None]
    if len(found) > 1:
        raise InvalidRequest(
            "only one structured output constraint (response_format json_object/json_schema, regex or "
            "ebnf) can be active at a time",
            param="response_format" if _response_format(body) is not None else "regex",
        )
    return found[0] if found else None


def sglang_constraints(
    body: Mapping[str, Any], keys: tuple[str, ...] = ("regex", "ebnf")
) -> list[Constraint]:
    """SGLang's extension fields ``regex``, ``ebnf`` and (completions) ``json_schema``, each validated."""
    out = []
    for key in keys:
        value = params.get(body, key, str, None)  # None: absent
        if value is None:
            continue
        if key == "regex":
            out.append(constraints.regex(value, param=key))
        elif key == "ebnf":
            out.append(constraints.ebnf(value, param=key))
        else:
            out.append(constraints.json_schema_text(value, param=key))
    return out


def _response_format(body: Mapping[str, Any]) -> Constraint | None:
    fmt = params.get(body, "response_format", dict, {"type": "text"})
    kind = fmt.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return constraints.json_schema(dict(constraints.JSON_OBJECT_SCHEMA), param="response_format")
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        if not isinstance(spec, dict):
            raise InvalidRequest(
                "response_format json_schema needs 'json_schema': {'name': ..., 'schema': {...}}",
                param="response_format",
            )
        if not isinstance(spec.get("name"), str) or not spec["name"]:
            raise InvalidRequest(
                "response_format: the JSON schema's 'name' is required", param="response_format"
            )
        if not isinstance(spec.get("strict", False), bool | None):
            raise InvalidRequest("response_format: 'strict' must be a boolean", param="response_format")
        return constraints.json_schema(spec.get("schema"), param="response_format")
    raise InvalidRequest(
        f"response_format type {kind!r} is not one of 'text', 'json_object', 'json_schema'",
        param="response_format",
    )
