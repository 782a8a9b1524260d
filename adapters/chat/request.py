"""OpenAI Chat Completions JSON → ``GenerateRequest``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from adapters import params
from dataplane.errors import InvalidRequest, UnsupportedParameter
from dataplane.types import GenerateRequest

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


def parse_chat(
    body: Mapping[str, Any],
    request_id: str,
    trace: Mapping[str, str],
    *,
    routing_key: str | None = None,
    target_worker: str | None = None,
) -> ChatRequest:
    params.reject_unknown(body, ALLOWED, UNSUPPORTED)
    _check_response_format(body)
    tools = _tools(body)
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
        chat_template_kwargs=kwargs,
        add_generation_prompt=params.get(body, "add_generation_prompt", bool, True),
        continue_final_message=params.get(body, "continue_final_message", bool, False),
        stream=params.get(body, "stream", bool, False),
        trace_carrier=trace,
        routing_key=routing_key,
        target_worker=target_worker,
    )
    return ChatRequest(generate, params.include_usage(body))


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


def _tools(body: Mapping[str, Any]) -> tuple[dict[str, Any], ...]:
    tools = params.get(body, "tools", list, [])
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(function, dict):
            raise InvalidRequest(
                f"tools[{i}] must be {{'type': 'function', 'function': {{...}}}}", param="tools"
            )
        if not isinstance(function.get("name"), str) or not function["name"]:
            raise InvalidRequest(f"tools[{i}].function.name is required", param="tools")
    choice = body.get("tool_choice")
    if choice not in (None, "auto", "none"):
        raise UnsupportedParameter(
            "tool_choice 'required' or a named function is not supported yet (only 'auto' and 'none')",
            param="tool_choice",
        )
    return () if choice == "none" else tuple(tools)


def _check_response_format(body: Mapping[str, Any]) -> None:
    fmt = params.get(body, "response_format", dict, {"type": "text"})
    if fmt.get("type") != "text":
        raise UnsupportedParameter(
            f"response_format type {fmt.get('type')!r} is not supported yet (only 'text')",
            param="response_format",
        )
