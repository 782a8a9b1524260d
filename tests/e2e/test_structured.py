"""Structured output end to end: ``tool_choice`` required / a named function and ``response_format``
become constraints the reference worker enforces with outlines-core (the output really matches), bad
ones are 400s before any worker sees them; SMG's parser endpoints."""

from __future__ import annotations

import json
import re
from typing import Any

import aiohttp
import openai
import pytest

from tests.e2e.conftest import (
    MODEL,
    Deployment,
    chat,
    chat_stream,
    find_request,
    finish,
    new_rid,
    streamed_text,
)
from tests.e2e.tools import CALL_ID, TIME, WEATHER, streamed_calls
from tests.schemas import conforms

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "age": {"type": "integer"},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1},
    },
    "required": ["name", "age", "tags"],
}


def sent_constraint(d: Deployment, rid: str) -> dict[str, str]:
    """The constraint fields of the SamplingParams the worker received."""
    _, request = find_request(d, rid)
    params = request["sampling_params"]
    return {k: params[k] for k in ("json_schema", "regex", "ebnf_grammar", "structural_tag") if k in params}


def parameters(tool: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = tool["function"]["parameters"]
    return schema


@pytest.mark.parametrize("stream", [False, True])
async def test_tool_choice_required(client: openai.AsyncOpenAI, shared: Deployment, stream: bool) -> None:
    rid = new_rid()
    kwargs: dict[str, Any] = {
        "tools": [WEATHER, TIME],
        "tool_choice": "required",
        "extra_headers": {"x-request-id": rid},
    }
    if stream:
        chunks = await chat_stream(client, "[ref chunk=random] weather?", **kwargs)
        calls = [(c["id"], c["name"], c["arguments"]) for c in streamed_calls(chunks)]
        reason, text = finish(chunks).finish_reason, streamed_text(chunks)
    else:
        choice = (await chat(client, "[ref chunk=random] weather?", **kwargs)).choices[0]
        calls = [(t.id, t.function.name, t.function.arguments) for t in choice.message.tool_calls]
        reason, text = choice.finish_reason, choice.message.content or ""
    assert calls and reason == "tool_calls" and text == ""
    tools = {t["function"]["name"]: t for t in (WEATHER, TIME)}
    for call_id, name, arguments in calls:  # whichever the worker chose: valid for its own schema
        assert CALL_ID.fullmatch(call_id)
        assert conforms(json.loads(arguments), parameters(tools[name])), arguments
    schema = json.loads(sent_constraint(shared, rid)["json_schema"])
    assert schema["type"] == "array" and schema["minItems"] == 1


@pytest.mark.parametrize("stream", [False, True])
async def test_named_function(client: openai.AsyncOpenAI, shared: Deployment, stream: bool) -> None:
    rid = new_rid()
    named = {"type": "function", "function": {"name": "get_weather"}}
    kwargs: dict[str, Any] = {
        "tools": [WEATHER, TIME],
        "tool_choice": named,
        "extra_headers": {"x-request-id": rid},
    }
    if stream:
        # Paced tokens: messages that arrive together reach the client as one chunk.
        chunks = await chat_stream(client, "[ref chunk=1 itl_ms=1] weather?", **kwargs)
        [call] = streamed_calls(chunks)
        name, arguments, reason = call["name"], call["arguments"], finish(chunks).finish_reason
        assert call["fragments"] > 1
    else:
        choice = (await chat(client, "weather?", **kwargs)).choices[0]
        [tool_call] = choice.message.tool_calls
        name, arguments, reason = tool_call.function.name, tool_call.function.arguments, choice.finish_reason
    assert (name, reason) == ("get_weather", "tool_calls")
    assert conforms(json.loads(arguments), parameters(WEATHER)), arguments
    assert json.loads(sent_constraint(shared, rid)["json_schema"]) == parameters(WEATHER)
    # Only the named function reaches the template.
    _, request = find_request(shared, rid)
    assert '"get_time"' not in request["tokenized"]["original_text"]


def allowed(mode: str, *names: str) -> dict[str, Any]:
    tools = [{"type": "function", "function": {"name": name}} for name in names]
    return {"type": "allowed_tools", "allowed_tools": {"mode": mode, "tools": tools}}


@pytest.mark.parametrize("stream", [False, True])
async def test_allowed_tools_required_calls_one_of_them(
    client: openai.AsyncOpenAI, shared: Deployment, stream: bool
) -> None:
    rid = new_rid()
    kwargs: dict[str, Any] = {
        "tools": [WEATHER, TIME],
        "tool_choice": allowed("required", "get_time"),
        "extra_headers": {"x-request-id": rid},
    }
    if stream:
        chunks = await chat_stream(client, "[ref chunk=random] time?", **kwargs)
        calls = [(c["name"], c["arguments"]) for c in streamed_calls(chunks)]
        reason = finish(chunks).finish_reason
    else:
        choice = (await chat(client, "[ref chunk=random] time?", **kwargs)).choices[0]
        calls = [(t.function.name, t.function.arguments) for t in choice.message.tool_calls]
        reason = choice.finish_reason
    assert calls and reason == "tool_calls"
    for name, arguments in calls:
        assert name == "get_time" and conforms(json.loads(arguments), parameters(TIME)), arguments
    schema = json.loads(sent_constraint(shared, rid)["json_schema"])
    assert schema["type"] == "array" and schema["minItems"] == 1
    # Only the allowed tools reach the template: the model cannot call another.
    _, request = find_request(shared, rid)
    assert '"get_weather"' not in request["tokenized"]["original_text"]


async def test_allowed_tools_auto_leaves_the_choice_to_the_model(
    client: openai.AsyncOpenAI, shared: Deployment
) -> None:
    rid = new_rid()
    reply = await chat(
        client,
        "[ref script=tool] weather?",
        tools=[WEATHER, TIME],
        tool_choice=allowed("auto", "get_weather"),
        extra_headers={"x-request-id": rid},
    )
    [call] = reply.choices[0].message.tool_calls
    assert call.function.name == "get_weather" and reply.choices[0].finish_reason == "tool_calls"
    assert sent_constraint(shared, rid) == {}  # auto: nothing forced
    _, request = find_request(shared, rid)
    assert '"get_time"' not in request["tokenized"]["original_text"]


@pytest.mark.parametrize(
    "choice",
    [
        allowed("required", "get_news"),  # not among the tools
        allowed("sometimes", "get_time"),
        allowed("auto"),
        {"type": "allowed_tools"},
        {"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": [{"type": "function"}]}},
    ],
)
async def test_bad_allowed_tools_are_400s(client: openai.AsyncOpenAI, choice: dict[str, Any]) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await chat(client, "hi", tools=[WEATHER, TIME], tool_choice=choice)
    assert caught.value.body["param"] == "tool_choice"  # type: ignore[index]


@pytest.mark.parametrize("stream", [False, True])
async def test_response_format_json_schema(
    client: openai.AsyncOpenAI, shared: Deployment, stream: bool
) -> None:
    rid = new_rid()
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}}
    kwargs: dict[str, Any] = {"response_format": fmt, "extra_headers": {"x-request-id": rid}}
    if stream:
        text = streamed_text(await chat_stream(client, "[ref chunk=random] who?", **kwargs))
    else:
        text = (await chat(client, "[ref chunk=random] who?", **kwargs)).choices[0].message.content
    assert conforms(json.loads(text), PERSON), text
    assert json.loads(sent_constraint(shared, rid)["json_schema"]) == PERSON


async def test_response_format_json_object(client: openai.AsyncOpenAI, shared: Deployment) -> None:
    rid = new_rid()
    whole = await chat(
        client, "hi", response_format={"type": "json_object"}, extra_headers={"x-request-id": rid}
    )
    assert isinstance(json.loads(whole.choices[0].message.content), dict)
    assert sent_constraint(shared, rid) == {"json_schema": '{"type":"object"}'}


async def test_regex_extension(client: openai.AsyncOpenAI, shared: Deployment) -> None:
    rid = new_rid()
    pattern = r"(red|green|blue)-[0-9]{2}"
    whole = await chat(client, "a color?", extra_body={"regex": pattern}, extra_headers={"x-request-id": rid})
    assert re.fullmatch(pattern, whole.choices[0].message.content)
    assert sent_constraint(shared, rid) == {"regex": pattern}


async def test_completions_take_constraints_too(client: openai.AsyncOpenAI) -> None:
    pattern = r"[0-9]{3}"
    reply = await client.completions.create(model=MODEL, prompt="Digits:", extra_body={"regex": pattern})
    assert re.fullmatch(pattern, reply.choices[0].text)
    reply = await client.completions.create(
        model=MODEL, prompt="Person:", max_tokens=64, extra_body={"json_schema": json.dumps(PERSON)}
    )
    assert conforms(json.loads(reply.choices[0].text), PERSON)


@pytest.mark.parametrize(
    "kwargs",
    [
        {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": {"type": "frob"}},
            }
        },
        {"extra_body": {"regex": "[z-a]"}},
        {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "get_time"}}},
    ],
    ids=["bad schema", "bad regex", "named tool not in tools"],
)
async def test_bad_constraints_never_reach_a_worker(
    client: openai.AsyncOpenAI, shared: Deployment, kwargs: dict[str, Any]
) -> None:
    rid = new_rid()
    with pytest.raises(openai.BadRequestError):
        await chat(client, "hi", extra_headers={"x-request-id": rid}, **kwargs)
    assert not [r for record in shared.records() for r in record["received"] if r.startswith(rid)]


async def test_a_grammar_the_worker_cannot_enforce_is_its_error(client: openai.AsyncOpenAI) -> None:
    # outlines-core has no grammars: the reference worker answers UNIMPLEMENTED, the client gets 501.
    with pytest.raises(openai.APIStatusError) as caught:
        await chat(client, "hi", extra_body={"ebnf": 'root ::= "yes" | "no"'})
    assert caught.value.status_code == 501


# ---- SMG's parser endpoints -----------------------------------------------------------------------


async def post(http: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> tuple[int, Any]:
    async with http.post(url, json=body) as reply:
        return reply.status, await reply.json()


async def test_parse_function_call(http: aiohttp.ClientSession, shared: Deployment) -> None:
    text = 'Checking.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    status, body = await post(
        http,
        f"{shared.url}/parse/function_call",
        {"text": text, "tool_call_parser": "qwen", "tools": [WEATHER]},
    )
    assert status == 200
    assert body == {
        "remaining_text": "Checking.\n",
        "tool_calls": [{"function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}],
        "success": True,
    }


async def test_parse_reasoning(http: aiohttp.ClientSession, shared: Deployment) -> None:
    text = "<think>\nhmm\n</think>\n\nHello"
    status, body = await post(
        http, f"{shared.url}/parse/reasoning", {"text": text, "reasoning_parser": "qwen3"}
    )
    assert status == 200
    assert body == {"normal_text": "\n\nHello", "reasoning_text": "\nhmm\n", "success": True}
    # deepseek_r1 starts inside reasoning: the opening marker is optional.
    status, body = await post(
        http, f"{shared.url}/parse/reasoning", {"text": "why\n</think>ok", "reasoning_parser": "deepseek_r1"}
    )
    assert (status, body["reasoning_text"], body["normal_text"]) == (200, "why\n", "ok")


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("function_call", {"text": "x", "tool_call_parser": "nope", "tools": []}, "tool_call_parser"),
        ("reasoning", {"text": "x", "reasoning_parser": "nope"}, "reasoning_parser"),
        ("reasoning", {"reasoning_parser": "qwen3"}, "text"),
        ("function_call", {"text": "x", "tool_call_parser": "qwen", "tools": "all"}, "tools"),
    ],
)
async def test_parse_endpoints_refuse_bad_requests(
    http: aiohttp.ClientSession, shared: Deployment, path: str, body: dict[str, Any], param: str
) -> None:
    status, reply = await post(http, f"{shared.url}/parse/{path}", body)
    assert status == 400
    assert reply["error"]["param"] == param and reply["error"]["type"] == "invalid_request_error"
    if "nope" in json.dumps(body):
        assert "known:" in reply["error"]["message"]  # the unknown name's error lists the known ones
