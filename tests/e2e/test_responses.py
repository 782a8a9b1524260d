"""The Responses API through the official client: inputs, the ``previous_response_id`` chain (what reached
the worker's prompt), storage, the streamed event sequence, tool calls, reasoning, structured output and
bad requests."""

from __future__ import annotations

import itertools
import json
import socket
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from dataplane.config import HistoryConfig
from refworker.scripts import FIXED_TEXT
from tests.e2e.conftest import (
    MODEL,
    Deployment,
    api_client,
    deployment,
    dispatched_as,
    eventually,
    find_request,
    new_rid,
    wait_idle,
)
from tests.e2e.tools import CALL_ID
from tests.schemas import conforms

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius"]}},
        "required": ["city"],
    },
}
PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string", "minLength": 1}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}
MESSAGE_EVENTS = [
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta*",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
]
REASONING_EVENTS = [
    "response.output_item.added",
    "response.content_part.added",
    "response.reasoning_text.delta*",
    "response.reasoning_text.done",
    "response.content_part.done",
    "response.output_item.done",
]
CALL_EVENTS = [
    "response.output_item.added",
    "response.function_call_arguments.delta*",
    "response.function_call_arguments.done",
    "response.output_item.done",
]


async def create(client: openai.AsyncOpenAI, rid: str | None = None, **kwargs: Any) -> Any:
    headers = {"x-request-id": rid} if rid else None
    return await client.responses.create(model=MODEL, extra_headers=headers, **kwargs)


async def stream(client: openai.AsyncOpenAI, **kwargs: Any) -> tuple[list[Any], Any]:
    """Every event of a streamed response, and the client's final response."""
    async with client.responses.stream(model=MODEL, **kwargs) as events:
        seen = [event async for event in events]
        return seen, await events.get_final_response()


def prompt(d: Deployment, rid: str) -> str:
    """The prompt the worker received for ``rid``."""
    _, request = find_request(d, rid)
    text: str = request["tokenized"]["original_text"]
    return text


def shape(response: Any) -> list[dict[str, Any]]:
    """A response's output without what differs between two runs (ids) or only the client adds."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {
                k: strip(v)
                for k, v in value.items()
                if k not in ("id", "call_id", "parsed", "parsed_arguments")
            }
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return [strip(item) for item in response.to_dict()["output"]]


def comparable(response: Any) -> dict[str, Any]:
    body: dict[str, Any] = response.to_dict()
    return {**body, "output": [_unparsed(item) for item in body["output"]]}


def _unparsed(item: dict[str, Any]) -> dict[str, Any]:
    content = [{k: v for k, v in part.items() if k != "parsed"} for part in item.get("content") or []]
    item = {k: v for k, v in item.items() if k != "parsed_arguments"}
    return {**item, "content": content} if "content" in item else item


def kinds(events: list[Any]) -> list[str]:
    """Event types with each run of deltas folded into one ``…delta*``."""
    out = []
    for kind, _ in itertools.groupby(e.type for e in events):
        out.append(f"{kind}*" if kind.endswith(".delta") else kind)
    return out


# ---- create and retrieve -----------------------------------------------------------------------------


async def test_string_input(client: openai.AsyncOpenAI) -> None:
    response = await create(client, input="Say hello in one sentence.")
    assert response.id.startswith("resp_") and response.object == "response"
    assert response.status == "completed" and response.model == MODEL
    assert response.output_text == FIXED_TEXT
    [message] = response.output
    assert message.type == "message" and message.role == "assistant" and message.id.startswith("msg_")
    usage = response.usage
    assert usage.input_tokens > 0 and usage.output_tokens > 0
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert usage.input_tokens_details.cached_tokens >= 0
    assert usage.output_tokens_details.reasoning_tokens == 0
    assert response.store is True and response.previous_response_id is None
    assert comparable(await client.responses.retrieve(response.id)) == comparable(response)


async def test_item_list_input_and_instructions(client: openai.AsyncOpenAI, shared: Deployment) -> None:
    rid = new_rid()
    items = [
        {"role": "developer", "content": "Answer in French."},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi, I am Ada."}]},
        {"role": "assistant", "content": [{"type": "output_text", "text": "Bonjour Ada."}]},
        {"role": "user", "content": "What is my name?"},
    ]
    response = await create(client, rid, input=items, instructions="You are terse.", metadata={"k": "v"})
    assert response.output_text == FIXED_TEXT
    assert response.instructions == "You are terse." and response.metadata == {"k": "v"}
    text = prompt(shared, rid)
    order = ["You are terse.", "Answer in French.", "Hi, I am Ada.", "Bonjour Ada.", "What is my name?"]
    positions = [text.index(part) for part in order]
    assert positions == sorted(positions), text
    assert text.startswith("<|im_start|>system\nYou are terse.")
    stored = [item async for item in client.responses.input_items.list(response.id, order="asc")]
    assert [(i.role, i.content[0].text) for i in stored] == [
        ("developer", "Answer in French."),
        ("user", "Hi, I am Ada."),
        ("assistant", "Bonjour Ada."),
        ("user", "What is my name?"),
    ]
    assert all(i.id.startswith("msg_") and i.status == "completed" for i in stored)


async def test_previous_response_chain(client: openai.AsyncOpenAI, shared: Deployment) -> None:
    """Three turns: each prompt holds every earlier input and output, in order; instructions are not
    carried over."""
    rids = [new_rid() for _ in range(3)]
    first = await create(client, rids[0], input="[ref script=echo] first question", instructions="Be brief.")
    assert first.output_text == "system\nBe brief."  # the echo: the prompt up to its first end of turn
    second = await create(client, rids[1], input="[ref script=fixed] second", previous_response_id=first.id)
    third = await create(client, rids[2], input="[ref script=echo] third", previous_response_id=second.id)
    assert third.previous_response_id == second.id
    text = prompt(shared, rids[2])
    turns = ["first question", "system\nBe brief.", "second", FIXED_TEXT, "[ref script=echo] third"]
    positions = [text.index(part) for part in turns]
    assert positions == sorted(positions), text
    instructions = "<|im_start|>system\nBe brief."
    assert prompt(shared, rids[0]).startswith(instructions) and instructions not in text
    assert third.output_text.startswith("user\n[ref script=echo] first question")  # the echo: turn 1 first


async def test_store_false_is_not_retrievable(client: openai.AsyncOpenAI) -> None:
    response = await create(client, input="hi", store=False)
    assert response.store is False and response.output_text == FIXED_TEXT
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(response.id)
    with pytest.raises(openai.NotFoundError) as caught:
        await create(client, input="again", previous_response_id=response.id)
    assert caught.value.body["param"] == "previous_response_id"  # type: ignore[index]


async def test_delete(client: openai.AsyncOpenAI, http: aiohttp.ClientSession, shared: Deployment) -> None:
    response = await create(client, input="hi")
    await client.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(response.id)
    async with http.delete(f"{shared.url}/v1/responses/{response.id}") as reply:
        assert reply.status == 404
    second = await create(client, input="hi")
    async with http.delete(f"{shared.url}/v1/responses/{second.id}") as reply:
        assert await reply.json() == {"id": second.id, "object": "response", "deleted": True}


async def test_history_operations_are_in_the_db_metrics(
    client: openai.AsyncOpenAI, shared: Deployment
) -> None:
    ops = "smg_db_operations_total"

    def count(name: str, **labels: str) -> float:
        return shared.gateway.metrics().value(name, **labels)

    before = {
        op: count(ops, storage_type="response", operation=op, result="success")
        for op in ("write", "read", "delete")
    }
    stored_before = count("smg_db_items_stored_total", storage_type="response")
    timed_before = count(
        "smg_db_operation_duration_seconds_count", storage_type="response", operation="write"
    )
    first = await create(client, input="hi")
    await create(client, input="again", previous_response_id=first.id)  # reads the chain
    await client.responses.retrieve(first.id)
    await client.responses.delete(first.id)
    after = {
        op: count(ops, storage_type="response", operation=op, result="success")
        for op in ("write", "read", "delete")
    }
    assert {op: after[op] - before[op] for op in after} == {"write": 2, "read": 2, "delete": 1}
    assert count("smg_db_items_stored_total", storage_type="response") - stored_before == 2
    assert count("smg_db_operation_duration_seconds_count", storage_type="response", operation="write") == (
        timed_before + 2
    )


async def test_input_items_pagination(client: openai.AsyncOpenAI) -> None:
    texts = [f"message {i}" for i in range(5)]
    response = await create(client, input=[{"role": "user", "content": t} for t in texts])
    page = await client.responses.input_items.list(response.id, limit=2, order="asc")
    assert [i.content[0].text for i in page.data] == texts[:2] and page.has_more
    assert (page.first_id, page.last_id) == (page.data[0].id, page.data[1].id)
    everything = [i.content[0].text async for i in client.responses.input_items.list(response.id, limit=2)]
    assert everything == texts[::-1]  # newest first by default, page after page
    after = await client.responses.input_items.list(response.id, order="asc", after=page.last_id)
    assert [i.content[0].text for i in after.data] == texts[2:] and not after.has_more


async def test_cancel(client: openai.AsyncOpenAI) -> None:
    response = await create(client, input="hi")
    with pytest.raises(openai.BadRequestError, match="background"):
        await client.responses.cancel(response.id)
    with pytest.raises(openai.NotFoundError):
        await client.responses.cancel("resp_unknown")


# ---- streaming ---------------------------------------------------------------------------------------


async def test_stream_event_sequence(client: openai.AsyncOpenAI) -> None:
    events, final = await stream(client, input="[ref chunk=1] hello")
    assert kinds(events) == [
        "response.created",
        "response.in_progress",
        *MESSAGE_EVENTS,
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert len(deltas) > 1 and "".join(deltas) == FIXED_TEXT == final.output_text
    created, completed = events[0].response, events[-1].response
    assert created.status == "in_progress" and created.output == [] and created.id == final.id
    assert completed.status == "completed" and completed.usage.output_tokens > 0
    item_ids = {e.item_id for e in events if hasattr(e, "item_id")}
    assert item_ids == {final.output[0].id}
    assert comparable(await client.responses.retrieve(final.id)) == comparable(final)


async def test_stream_wire_names_every_event(http: aiohttp.ClientSession, shared: Deployment) -> None:
    """As OpenAI sends it: ``event: <type>`` before each ``data:`` line; ``[DONE]`` last, as SMG ends it."""
    body = {"model": MODEL, "stream": True, "input": "hi", "max_output_tokens": 4}
    async with http.post(f"{shared.url}/v1/responses", json=body) as reply:
        assert reply.status == 200
        blocks = (await reply.text()).split("\n\n")
    assert blocks[-2:] == ["data: [DONE]", ""]
    names = []
    for block in blocks[:-2]:
        event, data = block.split("\n")
        assert event.startswith("event: ") and data.startswith("data: ")
        assert json.loads(data[len("data: ") :])["type"] == event[len("event: ") :]
        names.append(event[len("event: ") :])
    assert names[:2] == ["response.created", "response.in_progress"]
    assert names[-1] == "response.incomplete"


@pytest.mark.parametrize(
    ("content", "tools", "expected"),
    [
        ("[ref chunk=random seed=1] hi", [], [MESSAGE_EVENTS]),
        ("[ref script=think chunk=random seed=2] hi", [], [REASONING_EVENTS, MESSAGE_EVENTS]),
        ("[ref script=tool chunk=random seed=3] weather?", [WEATHER], [CALL_EVENTS]),
        (
            "[ref script=think_tool chunk=3] weather?",
            [WEATHER],
            [REASONING_EVENTS, MESSAGE_EVENTS, CALL_EVENTS],
        ),
    ],
    ids=["text", "reasoning", "tool", "reasoning-text-tool"],
)
async def test_stream_equals_non_stream(
    client: openai.AsyncOpenAI, content: str, tools: list[Any], expected: list[list[str]]
) -> None:
    whole = await create(client, input=content, tools=tools)
    events, final = await stream(client, input=content, tools=tools)
    assert shape(final) == shape(whole)
    assert kinds(events) == [
        "response.created",
        "response.in_progress",
        *itertools.chain.from_iterable(expected),
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert comparable(await client.responses.retrieve(final.id)) == comparable(final)


async def test_stream_worker_failure_ends_the_stream_as_failed(client: openai.AsyncOpenAI) -> None:
    events, _ = await _stream_until_failed(client, "[ref fail_after=2 chunk=1] hi")
    assert events[-1].type == "response.failed"
    failed = events[-1].response
    assert failed.status == "failed" and failed.error.code == "worker_error" and failed.error.message
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert failed.output[0].status == "incomplete"  # the message it had begun
    stored = await client.responses.retrieve(failed.id)
    assert stored.status == "failed"
    for stream_it in (False, True):  # a failure before the first token is an error status, not a stream
        with pytest.raises(openai.InternalServerError):
            await create(client, input="[ref fail=INTERNAL] hi", stream=stream_it)


async def _stream_until_failed(client: openai.AsyncOpenAI, content: str) -> tuple[list[Any], None]:
    async with client.responses.stream(model=MODEL, input=content) as events:
        return [event async for event in events], None


async def test_max_output_tokens_is_incomplete(client: openai.AsyncOpenAI) -> None:
    response = await create(client, input="hi", max_output_tokens=3)
    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"
    assert response.usage.output_tokens == 3 and response.output[0].status == "incomplete"
    async with client.responses.stream(model=MODEL, input="hi", max_output_tokens=3) as events:
        seen = [event async for event in events]
    assert seen[-1].type == "response.incomplete"
    assert shape(seen[-1].response) == shape(response)


async def test_stream_dropped_by_the_client_aborts_the_worker(
    http: aiohttp.ClientSession, shared: Deployment
) -> None:
    rid = new_rid("drop")
    body = {"model": MODEL, "stream": True, "input": "[ref script=filler tokens=400 itl_ms=50] talk"}
    reply = await http.post(f"{shared.url}/v1/responses", json=body, headers={"x-request-id": rid})
    try:
        while not (line := await reply.content.readline()).startswith(
            b'data: {"type":"response.output_text.delta"'
        ):
            assert line, "stream ended before any text"
    finally:
        reply.close()

    def aborted() -> bool:
        return any(
            dispatched_as(a["request_id"], rid) for record in shared.records() for a in record["aborted"]
        )

    await eventually(aborted)
    await wait_idle(http, shared)


# ---- tools, reasoning, structured output -------------------------------------------------------------


async def test_function_call_round_trip(client: openai.AsyncOpenAI, shared: Deployment) -> None:
    call_response = await create(client, input="[ref script=tool] weather in Paris?", tools=[WEATHER])
    [call] = call_response.output
    assert call.type == "function_call" and call.id.startswith("fc_") and CALL_ID.fullmatch(call.call_id)
    assert (call.name, json.loads(call.arguments)) == ("get_weather", {"city": "Paris", "unit": "celsius"})
    assert call.status == "completed" and call_response.tools[0].name == "get_weather"
    rid = new_rid()
    output = {"type": "function_call_output", "call_id": call.call_id, "output": "[ref script=fixed] 22 C"}
    answer = await create(client, rid, input=[output], previous_response_id=call_response.id, tools=[WEATHER])
    assert answer.output_text == FIXED_TEXT
    text = prompt(shared, rid)
    assert text.index('<tool_call>\n{"name": "get_weather"') < text.index("<tool_response>")
    assert "[ref script=fixed] 22 C\n</tool_response>" in text


async def test_tool_choice_named_function_and_none(client: openai.AsyncOpenAI) -> None:
    named = await create(
        client, input="weather?", tools=[WEATHER], tool_choice={"type": "function", "name": "get_weather"}
    )
    [call] = named.output
    assert call.type == "function_call" and conforms(json.loads(call.arguments), WEATHER["parameters"])
    plain = await create(client, input="[ref script=tool] weather?", tools=[WEATHER], tool_choice="none")
    assert [item.type for item in plain.output] == ["message"] and "<tool_call>" in plain.output_text


async def test_tool_choice_allowed_tools(client: openai.AsyncOpenAI) -> None:
    """The Responses API's flat ``allowed_tools`` shape, as chat's: only the listed tools, mode required."""
    choice = {
        "type": "allowed_tools",
        "mode": "required",
        "tools": [{"type": "function", "name": "get_weather"}],
    }
    response = await create(client, input="weather?", tools=[WEATHER], tool_choice=choice)  # type: ignore[arg-type]
    [call] = response.output
    assert call.type == "function_call" and call.name == "get_weather"
    assert conforms(json.loads(call.arguments), WEATHER["parameters"])
    unknown = {**choice, "tools": [{"type": "function", "name": "get_news"}]}
    with pytest.raises(openai.BadRequestError, match="get_news"):
        await create(client, input="weather?", tools=[WEATHER], tool_choice=unknown)  # type: ignore[arg-type]


async def test_reasoning(client: openai.AsyncOpenAI, shared: Deployment) -> None:
    response = await create(client, input="[ref script=think] hi")
    reasoning, message = response.output
    assert reasoning.type == "reasoning" and reasoning.id.startswith("rs_") and reasoning.summary == []
    assert [(c.type, c.text) for c in reasoning.content] == [
        ("reasoning_text", "\nThe user wants a greeting. 先想一想。\n")
    ]
    assert message.content[0].text == "\n\nHello! 你好 👋"
    rid = new_rid()
    await create(client, rid, input="hi", reasoning={"effort": "none"})
    assert prompt(shared, rid).endswith("<think>\n\n</think>\n\n")  # thinking switched off
    with pytest.raises(openai.BadRequestError, match="summar"):
        await create(client, input="hi", reasoning={"effort": "low", "summary": "auto"})


@pytest.mark.parametrize("stream_it", [False, True])
async def test_json_schema_text_format(client: openai.AsyncOpenAI, stream_it: bool) -> None:
    text = {"format": {"type": "json_schema", "name": "person", "schema": PERSON, "strict": True}}
    if stream_it:
        _, response = await stream(client, input="[ref chunk=random] who?", text=text)
    else:
        response = await create(client, input="who?", text=text)
    assert conforms(json.loads(response.output_text), PERSON), response.output_text
    assert response.text.format.type == "json_schema" and response.text.format.name == "person"


# ---- bad requests ------------------------------------------------------------------------------------

BAD = [
    ({"input": [{"type": "message", "role": "robot", "content": "x"}]}, "input[0].role"),
    ({"input": [{"type": "function_call_output", "output": "x"}]}, "input[0].call_id"),
    ({"input": [{"type": "message", "role": "user", "content": [{"type": "bogus"}]}]}, "input[0].content"),
    ({"input": []}, "input"),
    (
        {"input": "hi", "text": {"format": {"type": "json_schema", "name": "x", "schema": 3}}},
        "text.format.schema",
    ),
    ({"input": "hi", "previous_response_id": "resp_x", "conversation": "conv_x"}, "conversation"),
    ({"input": "hi", "temperature": 9}, "temperature"),
]
UNSUPPORTED = [
    ({"background": True}, "background"),
    ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"include": ["reasoning.encrypted_content"]}, "include"),
    ({"prompt_cache_key": "k"}, "prompt_cache_key"),
    ({"truncation": "auto"}, "truncation"),
    ({"top_logprobs": 2}, "top_logprobs"),
    (
        {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
        "input[0].content",
    ),
]


@pytest.mark.parametrize(("body", "param"), BAD)
async def test_invalid_request(client: openai.AsyncOpenAI, body: dict[str, Any], param: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await client.responses.create(model=MODEL, **body)
    assert caught.value.body["param"] == param  # type: ignore[index]


@pytest.mark.parametrize(("body", "param"), UNSUPPORTED)
async def test_unsupported_parameter(client: openai.AsyncOpenAI, body: dict[str, Any], param: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await client.responses.create(model=MODEL, **{"input": "hi", **body})
    error = caught.value.body
    assert error["param"] == param and error["code"] == "unsupported_parameter"  # type: ignore[index]


@pytest.mark.parametrize("stream_it", [False, True])
async def test_unknown_previous_response_is_404(client: openai.AsyncOpenAI, stream_it: bool) -> None:
    with pytest.raises(openai.NotFoundError, match="resp_nope"):
        await client.responses.create(
            model=MODEL, input="hi", previous_response_id="resp_nope", stream=stream_it
        )
    with pytest.raises(openai.NotFoundError):
        await client.responses.create(model="no-such-model", input="hi", stream=stream_it)


# ---- the none backend --------------------------------------------------------------------------------


async def test_none_backend_accepts_writes_and_keeps_nothing(model_dir: Path) -> None:
    with deployment(1, model_dir, history=HistoryConfig(backend="none")) as d:
        async with api_client(d) as client:
            response = await create(client, input="hi")
            assert response.status == "completed" and response.output_text == FIXED_TEXT
            with pytest.raises(openai.NotFoundError):
                await client.responses.retrieve(response.id)
            with pytest.raises(openai.NotFoundError):
                await create(client, input="again", previous_response_id=response.id)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # nothing listens there now


async def test_store_outage_fails_stateful_requests_only(model_dir: Path) -> None:
    """A history backend that cannot be reached: 503 ``history_unavailable`` before any output for what
    needs it (storing, a previous response, a conversation), streaming or not; stateless turns still work."""
    history = HistoryConfig(backend="redis", redis_url=f"redis://127.0.0.1:{closed_port()}")
    with deployment(1, model_dir, history=history) as d:
        async with api_client(d) as client:
            for kwargs in (
                {"input": "hi"},
                {"input": "hi", "stream": True},
                {"input": "hi", "store": False, "previous_response_id": "resp_x"},
                {"input": "hi", "store": False, "conversation": "conv_x", "stream": True},
            ):
                with pytest.raises(openai.InternalServerError) as caught:
                    await client.responses.create(model=MODEL, **kwargs)
                assert caught.value.status_code == 503
                assert caught.value.body["code"] == "history_unavailable"  # type: ignore[index]
            with pytest.raises(openai.InternalServerError, match="unavailable"):
                await client.conversations.create()
            whole = await create(client, input="hi", store=False)
            _, streamed = await stream(client, input="hi", store=False)
            assert whole.output_text == streamed.output_text == FIXED_TEXT
