"""OpenAI Responses JSON → a validated ``ResponsesRequest``, and from it (with the history the store gave
back) the chat ``GenerateRequest``: the items become chat messages and the parameters chat's, so the chat
conversion (``adapters.chat.request.parse_chat``) does the rest — tools, sampling, reasoning."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from adapters import params
from adapters.chat.request import parse_chat
from adapters.responses.items import metadata, normalize_items, to_messages
from dataplane import constraints
from dataplane.errors import InvalidRequest, UnsupportedParameter
from dataplane.history import Item
from dataplane.types import Constraint, GenerateRequest

# Passed to the chat conversion under the same name.
_SAMPLING = (
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "repetition_penalty",
    "frequency_penalty",
    "presence_penalty",
)
ALLOWED = frozenset(
    {
        *_SAMPLING,
        "model",
        "input",
        "instructions",
        "previous_response_id",
        "conversation",
        "store",
        "stream",
        "stream_options",
        "background",
        "max_output_tokens",
        "text",
        "reasoning",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "metadata",
        "user",
        "safety_identifier",
        "truncation",
        "include",
    }
)
UNSUPPORTED = {
    "max_tool_calls": "the gateway runs no built-in tools",
    "prompt": "prompt templates are not supported",
    "prompt_cache_key": "prompt cache keys are not supported",
    "prompt_cache_retention": "prompt cache retention is not supported",
    "service_tier": "service tiers are not supported",
    "top_logprobs": "logprobs are not supported on the Responses API",
    "context_management": "context management is not supported",
}
_TOOL_KEYS = frozenset({"type", "name", "description", "parameters", "strict"})
_THINKING_OFF = frozenset({"none", "minimal"})
_EFFORTS = frozenset({"none", "minimal", "low", "medium", "high", "xhigh", "max"})


@dataclass(frozen=True, slots=True)
class ResponsesRequest:
    """A validated ``POST /v1/responses``: this turn's input items, where its history comes from, and the
    chat parameters it becomes."""

    model: str
    input: list[Item]
    instructions: str | None
    previous_response_id: str | None
    conversation_id: str | None
    store: bool
    stream: bool
    metadata: dict[str, str]
    chat: dict[str, Any]  # chat completion parameters, without messages
    constraint: Constraint | None
    echo: dict[str, Any]  # request fields the Response object repeats

    @property
    def stateful(self) -> bool:
        """Whether the turn needs the history store (reads it, or writes to it)."""
        return self.store or self.previous_response_id is not None or self.conversation_id is not None


def parse_responses(body: Mapping[str, Any]) -> ResponsesRequest:
    params.reject_unknown(body, ALLOWED, UNSUPPORTED)
    if params.get(body, "background", bool, False):
        raise UnsupportedParameter("'background' mode is not supported", param="background")
    if body.get("include"):
        raise UnsupportedParameter("'include' is not supported: no additional output data", param="include")
    if params.get(body, "truncation", str, "disabled") != "disabled":
        raise UnsupportedParameter("'truncation' 'auto' is not supported", param="truncation")
    stream = params.get(body, "stream", bool, False)
    _stream_options(body, stream)
    previous = params.get(body, "previous_response_id", str, None)
    conversation = _conversation(body.get("conversation"))
    if previous is not None and conversation is not None:
        raise InvalidRequest(
            "'previous_response_id' and 'conversation' cannot be used together", param="conversation"
        )
    instructions = params.get(body, "instructions", str, None)
    tools, chat_tools = _tools(body)
    chat: dict[str, Any] = {key: body[key] for key in _SAMPLING if body.get(key) is not None}
    chat |= {
        "model": params.model_name(body),
        "stream": stream,
        "max_completion_tokens": params.integer(body, "max_output_tokens", 1),
        "tools": chat_tools or None,
        "tool_choice": _tool_choice(body.get("tool_choice")),
        "parallel_tool_calls": params.get(body, "parallel_tool_calls", bool, True),
    }
    reasoning, thinking = _reasoning(body)
    if thinking is not None:
        chat["chat_template_kwargs"] = {"enable_thinking": thinking}
    text, constraint = _text(body)
    echo = {
        "instructions": instructions,
        "max_output_tokens": chat["max_completion_tokens"],
        "parallel_tool_calls": chat["parallel_tool_calls"],
        "reasoning": reasoning,
        "temperature": body.get("temperature"),
        "text": text,
        "tool_choice": body.get("tool_choice") or "auto",
        "tools": tools,
        "top_p": body.get("top_p"),
        "truncation": "disabled",
        "user": params.get(body, "user", str, None),
        "safety_identifier": params.get(body, "safety_identifier", str, None),
    }
    return ResponsesRequest(
        model=chat["model"],
        input=_input(body.get("input")),
        instructions=instructions,
        previous_response_id=previous,
        conversation_id=conversation,
        store=params.get(body, "store", bool, True),
        stream=stream,
        metadata=metadata(body.get("metadata")),
        chat=chat,
        constraint=constraint,
        echo=echo,
    )


def generate_request(
    request: ResponsesRequest,
    history: Sequence[Item],
    request_id: str,
    trace: Mapping[str, str],
    *,
    routing_key: str | None = None,
    target_worker: str | None = None,
) -> GenerateRequest:
    """The chat request for this turn: instructions, then the history, then this turn's input."""
    messages = [{"role": "system", "content": request.instructions}] if request.instructions else []
    messages += to_messages([*history, *request.input])
    body = {k: v for k, v in request.chat.items() if v is not None} | {"messages": messages}
    generate = parse_chat(
        body, request_id, trace, routing_key=routing_key, target_worker=target_worker
    ).generate
    return generate if request.constraint is None else replace(generate, constraint=request.constraint)


def response_object(request: ResponsesRequest, response_id: str, created_at: int) -> dict[str, Any]:
    """The Response object before any output: ``in_progress``, no output, no usage."""
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": "in_progress",
        "background": False,
        "error": None,
        "incomplete_details": None,
        "model": request.model,
        "output": [],
        "previous_response_id": request.previous_response_id,
        "conversation": {"id": request.conversation_id} if request.conversation_id else None,
        "store": request.store,
        "metadata": request.metadata,
        "usage": None,
        **request.echo,
    }


def _input(value: object) -> list[Item]:
    if isinstance(value, str):
        if not value:
            raise InvalidRequest("'input' must not be empty", param="input")
        return normalize_items([{"type": "message", "role": "user", "content": value}], "input")
    if not isinstance(value, list) or not value:
        raise InvalidRequest("'input' must be a string or a non-empty list of items", param="input")
    return normalize_items(value, "input")


def _stream_options(body: Mapping[str, Any], stream: bool) -> None:
    options = params.get(body, "stream_options", dict, {})
    if options and not stream:
        raise InvalidRequest("'stream_options' is only allowed when 'stream' is true", param="stream_options")
    for key, value in options.items():
        if key != "include_obfuscation" or value:
            raise UnsupportedParameter(f"stream option {key!r} is not supported", param="stream_options")


def _conversation(value: object) -> str | None:
    if isinstance(value, dict):
        value = value.get("id")
        if not isinstance(value, str):
            raise InvalidRequest("'conversation' must be an id or {'id': ...}", param="conversation")
    if value is not None and (not isinstance(value, str) or not value):
        raise InvalidRequest("'conversation' must be an id or {'id': ...}", param="conversation")
    return value


def _tools(body: Mapping[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The tools as the Response echoes them, and in chat's nested shape."""
    tools = params.get(body, "tools", list, [])
    flat, nested = [], []
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        kind = tool.get("type") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or not isinstance(kind, str):
            raise InvalidRequest(f"{where} must be an object with a 'type'", param=where)
        if kind != "function":
            raise UnsupportedParameter(
                f"{where}: tool type {kind!r} is not supported (function tools only)", param=f"{where}.type"
            )
        if unknown := sorted(set(tool) - _TOOL_KEYS):
            raise UnsupportedParameter(
                f"{where}: {unknown[0]!r} is not supported", param=f"{where}.{unknown[0]}"
            )
        if not isinstance(tool.get("name"), str) or not tool["name"]:
            raise InvalidRequest(f"{where}.name is required", param=f"{where}.name")
        if not isinstance(tool.get("parameters") or {}, dict):
            raise InvalidRequest(
                f"{where}.parameters must be a JSON schema object", param=f"{where}.parameters"
            )
        function = {k: v for k, v in tool.items() if k != "type" and v is not None}
        flat.append({"type": "function", "description": None, "parameters": None, "strict": None, **tool})
        nested.append({"type": "function", "function": function})
    return flat, nested


def _tool_choice(value: object) -> object:
    """``tool_choice`` in chat's shape (a function named at the top level moves under ``function``)."""
    if value is None or value in ("auto", "none", "required"):
        return value
    if isinstance(value, dict) and value.get("type") == "function":
        name = value.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidRequest("tool_choice {'type': 'function'} needs a 'name'", param="tool_choice")
        return {"type": "function", "function": {"name": name}}
    if isinstance(value, dict) and value.get("type") == "allowed_tools":  # flat here, nested in chat
        tools = value.get("tools")
        nested = [
            {"type": t.get("type"), "function": {"name": t.get("name")}} if isinstance(t, dict) else t
            for t in (tools if isinstance(tools, list) else [])
        ]
        return {"type": "allowed_tools", "allowed_tools": {"mode": value.get("mode"), "tools": nested}}
    if isinstance(value, dict) and isinstance(value.get("type"), str):
        raise UnsupportedParameter(
            f"tool_choice type {value['type']!r} is not supported", param="tool_choice"
        )
    raise InvalidRequest(
        "'tool_choice' must be 'none', 'auto', 'required' or {'type': 'function', 'name': ...}",
        param="tool_choice",
    )


def _reasoning(body: Mapping[str, Any]) -> tuple[dict[str, Any], bool | None]:
    """The echoed ``reasoning`` and whether it switches thinking on or off (``None``: the template's
    default). Reasoning comes back as the model wrote it, so summaries are refused."""
    reasoning = params.get(body, "reasoning", dict, {})
    for key, value in reasoning.items():
        if value is not None and key != "effort":
            raise UnsupportedParameter(
                f"reasoning.{key} is not supported: reasoning is returned as written, not summarized",
                param=f"reasoning.{key}",
            )
    effort = reasoning.get("effort")
    if effort is not None and effort not in _EFFORTS:
        raise InvalidRequest(
            f"reasoning.effort must be one of {', '.join(sorted(_EFFORTS))}", param="reasoning.effort"
        )
    thinking = None if effort is None else effort not in _THINKING_OFF
    return {"effort": effort, "summary": None}, thinking


def _text(body: Mapping[str, Any]) -> tuple[dict[str, Any], Constraint | None]:
    """The echoed ``text`` and the constraint its format asks for."""
    text = params.get(body, "text", dict, {})
    if text.get("verbosity") is not None:
        raise UnsupportedParameter("text.verbosity is not supported", param="text.verbosity")
    if unknown := sorted(set(text) - {"format", "verbosity"}):
        raise UnsupportedParameter(f"text.{unknown[0]} is not supported", param=f"text.{unknown[0]}")
    fmt = text.get("format") or {"type": "text"}
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return {"format": {"type": "text"}}, None
    if kind == "json_object":
        schema = dict(constraints.JSON_OBJECT_SCHEMA)
        return {"format": {"type": "json_object"}}, constraints.json_schema(schema, param="text.format")
    if kind == "json_schema":
        assert isinstance(fmt, dict)
        if not isinstance(fmt.get("name"), str) or not fmt["name"]:
            raise InvalidRequest(
                "text.format: the JSON schema's 'name' is required", param="text.format.name"
            )
        if not isinstance(fmt.get("strict", False), bool | None):
            raise InvalidRequest("text.format.strict must be a boolean", param="text.format.strict")
        constraint = constraints.json_schema(fmt.get("schema"), param="text.format.schema")
        echoed = {"type": "json_schema", "description": None, "strict": None, **fmt}
        return {"format": echoed}, constraint
    raise InvalidRequest(
        "text.format.type must be one of 'text', 'json_object', 'json_schema'", param="text.format"
    )
