"""Responses JSON → items, chat messages and the chat ``GenerateRequest``; every bad input a 400 naming
its parameter."""

from __future__ import annotations

import json
from typing import Any

import pytest

from adapters.responses.items import normalize_items, page_params, to_messages
from adapters.responses.request import generate_request, parse_responses, response_object
from dataplane.errors import InvalidRequest, UnsupportedParameter
from dataplane.types import ToolChoice

WEATHER = {"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}}


def body(**fields: Any) -> dict[str, Any]:
    return {"model": "m", "input": "hi", **fields}


def test_string_input_is_one_user_message() -> None:
    request = parse_responses(body())
    [item] = request.input
    assert item["id"].startswith("msg_") and len(item["id"]) == 4 + 48
    assert item == {
        "id": item["id"],
        "type": "message",
        "role": "user",
        "content": [{"type": "input_text", "text": "hi"}],
        "status": "completed",
    }
    assert request.store and not request.stream and request.stateful
    assert not parse_responses(body(store=False)).stateful


def test_items_normalized_and_ids_kept() -> None:
    items = normalize_items(
        [
            {"role": "assistant", "content": "done"},
            {"type": "function_call", "id": "fc_mine", "call_id": "call_1", "name": "f", "arguments": "{}"},
            {
                "type": "function_call_output",
                "call_id": "call_1",
                "output": [{"type": "input_text", "text": "ok"}],
            },
            {"type": "reasoning", "summary": [], "content": [{"type": "reasoning_text", "text": "why"}]},
        ],
        "input",
    )
    assert items[0]["content"] == [{"annotations": [], "type": "output_text", "text": "done"}]
    assert (
        items[1]["id"] == "fc_mine" and items[2]["id"].startswith("fco_") and items[3]["id"].startswith("rs_")
    )
    assert items[2]["output"] == "ok"


def test_history_becomes_chat_messages() -> None:
    items = normalize_items(
        [
            {"role": "user", "content": "weather?"},
            {"type": "reasoning", "summary": [], "content": [{"type": "reasoning_text", "text": "call it"}]},
            {"role": "assistant", "content": "Let me check."},
            {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"c": 1}'},
            {"type": "function_call", "call_id": "call_2", "name": "get_time", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
            {"role": "developer", "content": "be nice"},
        ],
        "input",
    )
    assert to_messages(items) == [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": "Let me check.",
            "reasoning_content": "call it",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"c": 1}'},
                },
                {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "developer", "content": "be nice"},
    ]


def test_generate_request_from_history_and_parameters() -> None:
    request = parse_responses(
        body(
            instructions="Be brief.",
            max_output_tokens=7,
            temperature=0.5,
            tools=[WEATHER],
            tool_choice={"type": "function", "name": "get_weather"},
            parallel_tool_calls=False,
            reasoning={"effort": "none"},
            text={"format": {"type": "json_schema", "name": "x", "schema": {"type": "object"}}},
            stream=True,
        )
    )
    history = normalize_items([{"role": "user", "content": "before"}], "input")
    generate = generate_request(request, history, "rid", {})
    assert generate.messages is not None
    assert [(m["role"], m["content"]) for m in generate.messages] == [
        ("system", "Be brief."),
        ("user", "before"),
        ("user", "hi"),
    ]
    assert generate.sampling.max_tokens == 7 and generate.sampling.temperature == 0.5
    assert generate.tools == (
        {"type": "function", "function": {k: v for k, v in WEATHER.items() if k != "type"}},
    )
    assert generate.tool_choice == ToolChoice("function", "get_weather")
    assert not generate.parallel_tool_calls and generate.stream
    assert generate.chat_template_kwargs == {"enable_thinking": False}
    assert generate.constraint is not None and json.loads(generate.constraint.value) == {"type": "object"}
    echoed = response_object(request, "resp_1", 1)
    assert echoed["tools"][0]["name"] == "get_weather" and echoed["max_output_tokens"] == 7
    assert echoed["text"]["format"]["name"] == "x" and echoed["reasoning"] == {
        "effort": "none",
        "summary": None,
    }


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"input": 3}, "input"),
        ({"input": ""}, "input"),
        ({"input": [{"role": "user"}]}, "input[0].content"),
        ({"input": [{"content": "x"}]}, "input[0]"),
        (
            {"input": [{"type": "function_call", "call_id": "c", "name": "", "arguments": ""}]},
            "input[0].name",
        ),
        ({"input": [{"role": "user", "content": "x", "status": "weird"}]}, "input[0].status"),
        ({"conversation": {"name": "x"}}, "conversation"),
        ({"previous_response_id": "resp_1", "conversation": "conv_1"}, "conversation"),
        ({"metadata": {"k": 1}}, "metadata"),
        ({"metadata": {str(i): "v" for i in range(17)}}, "metadata"),
        ({"tools": [{"type": "function"}]}, "tools[0].name"),
        ({"tool_choice": {"type": "function"}}, "tool_choice"),
        ({"tool_choice": "sometimes"}, "tool_choice"),
        ({"text": {"format": {"type": "yaml"}}}, "text.format"),
        ({"text": {"format": {"type": "json_schema", "schema": {}}}}, "text.format.name"),
        ({"reasoning": {"effort": "extreme"}}, "reasoning.effort"),
        ({"stream_options": {"include_obfuscation": False}}, "stream_options"),
        ({"max_output_tokens": 0}, "max_output_tokens"),
        ({"model": ""}, "model"),
    ],
)
def test_invalid(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_responses(body(**fields))
    assert not isinstance(caught.value, UnsupportedParameter)
    assert caught.value.param == param


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"background": True}, "background"),
        ({"tools": [{"type": "file_search"}]}, "tools[0].type"),
        ({"tools": [{**WEATHER, "defer_loading": True}]}, "tools[0].defer_loading"),
        ({"reasoning": {"summary": "auto"}}, "reasoning.summary"),
        ({"text": {"verbosity": "low"}}, "text.verbosity"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0]"),
        ({"input": [{"type": "computer_call_output"}]}, "input[0].type"),
        ({"stream": True, "stream_options": {"include_obfuscation": True}}, "stream_options"),
        ({"max_tool_calls": 2}, "max_tool_calls"),
        ({"n": 2}, "n"),
    ],
)
def test_unsupported(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(UnsupportedParameter) as caught:
        parse_responses(body(**fields))
    assert caught.value.param == param


def test_background_false_and_disabled_truncation_are_fine() -> None:
    parse_responses(body(background=False, truncation="disabled", include=[], stream=True))


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({}, (20, "desc", None)),
        ({"limit": "5", "order": "asc", "after": "msg_1"}, (5, "asc", "msg_1")),
    ],
)
def test_page_params(query: dict[str, str], expected: tuple[int, str, str | None]) -> None:
    assert page_params(query) == expected


@pytest.mark.parametrize(
    "query", [{"limit": "0"}, {"limit": "101"}, {"limit": "x"}, {"order": "up"}, {"x": "1"}]
)
def test_bad_page_params(query: dict[str, str]) -> None:
    with pytest.raises(InvalidRequest):
        page_params(query)
