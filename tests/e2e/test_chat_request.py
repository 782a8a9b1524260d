"""What a chat request becomes on the worker: template kwargs, tools, request ids (checked in the
worker's own record)."""

from __future__ import annotations

from typing import Any

import aiohttp
import openai
import pytest

from dataplane.tokenizer import ModelTokenizer
from refworker.scripts import FIXED_TEXT
from tests.e2e.conftest import MODEL, Deployment, dispatched_as, find_request, new_rid

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius"]}},
            "required": ["city"],
        },
    },
}
EMPTY_THINK = "<think>\n\n</think>\n\n"


async def create(client: openai.AsyncOpenAI, rid: str, **kwargs: Any) -> Any:
    kwargs.setdefault("messages", [{"role": "user", "content": "What's the weather in Paris?"}])
    return await client.chat.completions.create(model=MODEL, extra_headers={"x-request-id": rid}, **kwargs)


def recorded_text(d: Deployment, rid: str, qwen: ModelTokenizer) -> str:
    _, request = find_request(d, rid)
    text: str = request["tokenized"]["original_text"]
    ids = [int(i) for i in request["tokenized"]["input_ids"]]
    assert qwen.decode(ids, skip_special_tokens=False) == text  # ids and text describe the same prompt
    return text


@pytest.mark.parametrize(
    ("kwargs", "thinking_off"),
    [
        ({}, False),
        ({"enable_thinking": True}, False),
        ({"enable_thinking": False}, True),
    ],
)
async def test_chat_template_kwargs_reach_the_template(
    client: openai.AsyncOpenAI,
    shared: Deployment,
    qwen: ModelTokenizer,
    kwargs: dict[str, Any],
    thinking_off: bool,
) -> None:
    rid = new_rid()
    reply = await create(client, rid, extra_body={"chat_template_kwargs": kwargs} if kwargs else None)
    assert reply.choices[0].message.content == FIXED_TEXT
    text = recorded_text(shared, rid, qwen)
    assert text.endswith("<|im_start|>assistant\n" + (EMPTY_THINK if thinking_off else ""))


@pytest.mark.parametrize(("tool_choice", "rendered"), [(None, True), ("auto", True), ("none", False)])
async def test_tools_reach_the_template(
    client: openai.AsyncOpenAI,
    shared: Deployment,
    qwen: ModelTokenizer,
    tool_choice: str | None,
    rendered: bool,
) -> None:
    rid = new_rid()
    kwargs: dict[str, Any] = {"tools": [WEATHER_TOOL]}
    if tool_choice is not None:
        kwargs["tool_choice"] = tool_choice
    await create(client, rid, **kwargs)
    text = recorded_text(shared, rid, qwen)
    assert ("<tools>" in text and '"name": "get_weather"' in text) is rendered
    assert text.startswith("<|im_start|>system\n") is rendered


async def test_conversation_with_system_and_assistant_turns(
    client: openai.AsyncOpenAI, shared: Deployment, qwen: ModelTokenizer
) -> None:
    messages = [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}]},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Again, 再一次"},
    ]
    rid = new_rid()
    reply = await create(client, rid, messages=messages)
    assert reply.choices[0].message.content == FIXED_TEXT
    expected = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi there"},
        *messages[2:],
    ]
    assert recorded_text(shared, rid, qwen) == qwen.render_chat(expected)


@pytest.mark.parametrize("header", ["x-request-id", "x-correlation-id"])
@pytest.mark.parametrize("stream", [False, True])
async def test_request_id_is_honoured(
    client: openai.AsyncOpenAI, shared: Deployment, header: str, stream: bool
) -> None:
    rid = new_rid("client-id")
    raw = await client.chat.completions.with_raw_response.create(
        model=MODEL,
        messages=[{"role": "user", "content": "hi"}],
        stream=stream,
        extra_headers={header: rid},
    )
    assert raw.headers["x-request-id"] == rid
    parsed = raw.parse()
    ids = {chunk.id async for chunk in parsed} if stream else {parsed.id}
    # As in SMG: the client's id, made unique per dispatch, is the response id and the engine's id.
    (engine_id,) = ids
    assert engine_id.startswith(f"{rid}-")
    find_request(shared, engine_id)


@pytest.mark.parametrize("stream", [False, True])
async def test_request_id_generated_when_absent(
    client: openai.AsyncOpenAI, shared: Deployment, stream: bool
) -> None:
    raw = await client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=stream
    )
    rid = raw.headers["x-request-id"]
    assert rid.startswith("chatcmpl-")
    parsed = raw.parse()
    ids = {chunk.id async for chunk in parsed} if stream else {parsed.id}
    assert ids == {rid}
    find_request(shared, rid)


async def test_error_responses_echo_the_request_id(http: aiohttp.ClientSession, shared: Deployment) -> None:
    rid = new_rid()
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "n": 0}
    async with http.post(f"{shared.url}/v1/chat/completions", json=body, headers={"x-request-id": rid}) as r:
        assert r.status == 400
        assert r.headers.get("x-request-id") == rid


DEFAULT_SAMPLING = {"temperature": 1.0, "top_p": 1.0, "top_k": -1, "repetition_penalty": 1.0, "n": 1}


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, DEFAULT_SAMPLING),
        (
            {"temperature": 0.25, "top_p": 0.5, "frequency_penalty": 0.5, "presence_penalty": -0.5},
            {"temperature": 0.25, "top_p": 0.5, "frequency_penalty": 0.5, "presence_penalty": -0.5},
        ),
        (
            {"extra_body": {"top_k": 5, "min_p": 0.125, "repetition_penalty": 1.5, "min_tokens": 2}},
            {"top_k": 5, "min_p": 0.125, "repetition_penalty": 1.5, "min_new_tokens": 2},
        ),
        ({"max_tokens": 50}, {"max_new_tokens": 50}),
        ({"max_completion_tokens": 40, "max_tokens": 50}, {"max_new_tokens": 40}),
        ({"n": 2}, {"n": 2}),
        ({"logit_bias": {"5": 10}}, {"logit_bias": {"5": 10.0}}),
        (
            {"extra_body": {"ignore_eos": True, "no_stop_trim": True}},
            {"ignore_eos": True, "no_stop_trim": True},
        ),
    ],
)
async def test_sampling_parameters_reach_the_worker(
    client: openai.AsyncOpenAI, shared: Deployment, kwargs: dict[str, Any], expected: dict[str, Any]
) -> None:
    rid = new_rid()
    await create(client, rid, **kwargs)
    _, request = find_request(shared, rid)
    params = request["sampling_params"]
    for key, value in expected.items():  # floats went through float32 on the wire
        assert params.get(key) == (pytest.approx(value) if isinstance(value, float) else value), key
    if "max_tokens" not in kwargs and "max_completion_tokens" not in kwargs:
        assert "max_new_tokens" not in params  # unset: the engine's default applies
    # String stops never go to a tokenizer-less engine; the gateway asks for token ids, not text.
    assert not params.get("stop")
    assert params["skip_special_tokens"] is True


@pytest.mark.parametrize("stream", [False, True])
async def test_stream_flag_and_logprob_request_reach_the_worker(
    client: openai.AsyncOpenAI, shared: Deployment, stream: bool
) -> None:
    rid = new_rid()
    reply = await create(client, rid, stream=stream, logprobs=True, top_logprobs=4)
    if stream:
        _ = [c async for c in reply]
    _, request = find_request(shared, rid)
    assert request.get("stream", False) is stream
    assert request.get("return_logprob") is True
    assert request.get("top_logprobs_num") == 4


async def test_trace_context_reaches_the_worker(client: openai.AsyncOpenAI, shared: Deployment) -> None:
    rid = new_rid()
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    await client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={"x-request-id": rid, "traceparent": traceparent, "tracestate": "vendor=1"},
    )
    for record in shared.records():
        ids = [r["request_id"] for r in record["recent_requests"]]
        hits = [i for i, engine_id in enumerate(ids) if dispatched_as(engine_id, rid)]
        if hits:
            metadata = record["metadata"][hits[0]]
            assert metadata.get("traceparent") == traceparent
            assert metadata.get("tracestate") == "vendor=1"
            return
    raise AssertionError(f"{rid} not recorded")


async def test_tool_call_conversation_renders(
    client: openai.AsyncOpenAI, shared: Deployment, qwen: ModelTokenizer
) -> None:
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
    }
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21}'},
    ]
    rid = new_rid()
    reply = await create(client, rid, messages=messages, tools=[WEATHER_TOOL])
    assert reply.choices[0].message.content == FIXED_TEXT
    text = recorded_text(shared, rid, qwen)
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>' in text
    assert '<tool_response>\n{"temp": 21}\n</tool_response>' in text


@pytest.mark.parametrize(
    ("messages", "extra_body", "ending"),
    [
        (
            [{"role": "user", "content": "hi"}],
            {"add_generation_prompt": False},
            "<|im_start|>user\nhi<|im_end|>\n",
        ),
        (
            [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "The answer is"}],
            {"continue_final_message": True},
            "The answer is",  # the assistant turn left open
        ),
    ],
    ids=["no-generation-prompt", "continue-final-message"],
)
async def test_generation_prompt_options(
    client: openai.AsyncOpenAI,
    shared: Deployment,
    qwen: ModelTokenizer,
    messages: list[dict[str, Any]],
    extra_body: dict[str, Any],
    ending: str,
) -> None:
    rid = new_rid()
    await create(client, rid, messages=messages, extra_body=extra_body)
    text = recorded_text(shared, rid, qwen)
    assert text.endswith(ending)
    assert text == qwen.render_chat(messages, **extra_body)
