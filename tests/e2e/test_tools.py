"""Tool calls and reasoning through the official client: the worker's Qwen-format text parsed into
``tool_calls`` (streamed in OpenAI's delta form, equal to the non-streamed message for any chunking),
parallel calls, ``tool_choice``, ``reasoning_content``."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from refworker.scripts import THINK_TEXT, tool_text
from tests.e2e.conftest import chat, chat_stream, extra, finish, streamed_text
from tests.e2e.tools import CALL_ID, TIME, WEATHER, message_calls, streamed_calls

ARGUMENTS = {"city": "Paris", "unit": "celsius"}  # what the worker's tool script passes
CHUNKINGS = ["chunk=1", "chunk=random seed=3", "chunk=4"]


@pytest.mark.parametrize("chunking", CHUNKINGS)
async def test_tool_call_stream_equals_non_stream(client: openai.AsyncOpenAI, chunking: str) -> None:
    # chunk=1 is paced: messages that arrive together reach the client as one chunk.
    pace = " itl_ms=1" if chunking == "chunk=1" else ""
    content = f"[ref script=tool {chunking}{pace}] What's the weather in Paris?"
    whole = await chat(client, content, tools=[WEATHER])
    chunks = await chat_stream(client, content, tools=[WEATHER])

    choice = whole.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    [call] = choice.message.tool_calls
    assert call.type == "function" and CALL_ID.fullmatch(call.id)
    assert (call.function.name, json.loads(call.function.arguments)) == ("get_weather", ARGUMENTS)

    [streamed] = streamed_calls(chunks)
    assert CALL_ID.fullmatch(streamed["id"])
    assert (streamed["name"], streamed["arguments"]) == (call.function.name, call.function.arguments)
    if chunking == "chunk=1":
        assert streamed["fragments"] > 1  # streamed as they arrive, not at the end
    assert streamed_text(chunks) == ""
    assert finish(chunks).finish_reason == "tool_calls"


@pytest.mark.parametrize("stream", [False, True])
async def test_parallel_calls(client: openai.AsyncOpenAI, stream: bool) -> None:
    content = "[ref script=tool tool=get_weather,get_time chunk=random] Weather and time?"
    if stream:
        calls = streamed_calls(await chat_stream(client, content, tools=[WEATHER, TIME]))
        ids, pairs = [c["id"] for c in calls], [(c["name"], c["arguments"]) for c in calls]
    else:
        message = (await chat(client, content, tools=[WEATHER, TIME])).choices[0].message
        ids, pairs = [t.id for t in message.tool_calls], message_calls(message)
    assert [name for name, _ in pairs] == ["get_weather", "get_time"]
    assert all(json.loads(arguments) == ARGUMENTS for _, arguments in pairs)
    assert len(set(ids)) == 2 and all(CALL_ID.fullmatch(i) for i in ids)


async def test_parallel_tool_calls_false_keeps_one(client: openai.AsyncOpenAI) -> None:
    content = "[ref script=tool tool=get_weather,get_time] Weather and time?"
    whole = await chat(client, content, tools=[WEATHER, TIME], parallel_tool_calls=False)
    assert [name for name, _ in message_calls(whole.choices[0].message)] == ["get_weather"]


async def test_tool_choice_none_leaves_the_text_alone(client: openai.AsyncOpenAI) -> None:
    whole = await chat(client, "[ref script=tool] weather?", tools=[WEATHER], tool_choice="none")
    assert whole.choices[0].message.content == tool_text("get_weather")
    assert not whole.choices[0].message.tool_calls
    assert whole.choices[0].finish_reason == "stop"


async def test_a_call_to_an_unknown_function_stays_text(client: openai.AsyncOpenAI) -> None:
    whole = await chat(client, "[ref script=tool tool=launch_rocket] go", tools=[WEATHER])
    assert not whole.choices[0].message.tool_calls
    assert "launch_rocket" in whole.choices[0].message.content
    assert whole.choices[0].finish_reason == "stop"


# ---- reasoning -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs", [{}, {"enable_thinking": True}])
@pytest.mark.parametrize("chunking", CHUNKINGS)
async def test_reasoning_content(client: openai.AsyncOpenAI, kwargs: dict[str, Any], chunking: str) -> None:
    content = f"[ref script=think {chunking}] Say hello."
    body = {"chat_template_kwargs": kwargs}
    whole = await chat(client, content, extra_body=body)
    chunks = await chat_stream(client, content, extra_body=body)
    message = whole.choices[0].message
    assert extra(message, "reasoning_content") == "\nThe user wants a greeting. 先想一想。\n"
    assert message.content == "\n\nHello! 你好 👋"
    streamed_reasoning = "".join(
        extra(c.delta, "reasoning_content") or "" for ch in chunks for c in ch.choices
    )
    assert streamed_reasoning == extra(message, "reasoning_content")
    assert streamed_text(chunks) == message.content
    assert whole.choices[0].finish_reason == finish(chunks).finish_reason == "stop"


@pytest.mark.parametrize("n", [1, 2])
async def test_stream_reasoning_false_sends_the_reasoning_in_one_chunk(
    client: openai.AsyncOpenAI, n: int
) -> None:
    """SGLang's ``stream_reasoning: false``: each choice's reasoning is held and leaves whole, before its
    text; the text still streams."""
    # Paced tokens: messages that arrive together reach the client as one chunk.
    content = "[ref script=think chunk=1 itl_ms=2] Say hello."
    streamed = await chat_stream(client, content, n=n)
    held = await chat_stream(client, content, n=n, extra_body={"stream_reasoning": False})
    for index in range(n):
        pieces = [extra(c.delta, "reasoning_content") for ch in held for c in ch.choices if c.index == index]
        whole = "".join(
            extra(c.delta, "reasoning_content") or ""
            for ch in streamed
            for c in ch.choices
            if c.index == index
        )
        assert [p for p in pieces if p] == [whole] == ["\nThe user wants a greeting. 先想一想。\n"]
        assert streamed_text(held, index) == streamed_text(streamed, index) == "\n\nHello! 你好 👋"
        texts = [bool(c.delta.content) for ch in held for c in ch.choices if c.index == index]
        assert sum(texts) > 1  # the answer is still streamed, after the reasoning
        order = [
            "reasoning" if extra(c.delta, "reasoning_content") else "text"
            for ch in held
            for c in ch.choices
            if c.index == index and (c.delta.content or extra(c.delta, "reasoning_content"))
        ]
        assert order[0] == "reasoning" and "reasoning" not in order[1:]


async def test_separate_reasoning_false_keeps_the_markers(client: openai.AsyncOpenAI) -> None:
    whole = await chat(client, "[ref script=think] hi", extra_body={"separate_reasoning": False})
    assert whole.choices[0].message.content == THINK_TEXT
    assert not extra(whole.choices[0].message, "reasoning_content")


@pytest.mark.parametrize("stream", [False, True])
async def test_reasoning_then_text_then_a_tool_call(client: openai.AsyncOpenAI, stream: bool) -> None:
    content = "[ref script=think_tool chunk=random seed=5] Weather in Paris?"
    if stream:
        chunks = await chat_stream(client, content, tools=[WEATHER])
        reasoning = "".join(extra(c.delta, "reasoning_content") or "" for ch in chunks for c in ch.choices)
        text, reason = streamed_text(chunks), finish(chunks).finish_reason
        calls = [(c["name"], c["arguments"]) for c in streamed_calls(chunks)]
    else:
        choice = (await chat(client, content, tools=[WEATHER])).choices[0]
        reasoning, text = extra(choice.message, "reasoning_content"), choice.message.content
        reason, calls = choice.finish_reason, message_calls(choice.message)
    assert reasoning == "\nThe user wants the weather: call the tool.\n"
    assert text.strip() == "Let me check."
    assert [(name, json.loads(arguments)) for name, arguments in calls] == [("get_weather", ARGUMENTS)]
    assert reason == "tool_calls"
