"""``ResponseBuilder``: events → output items and OpenAI's Responses stream events; the non-streaming
response is the same fold."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from adapters.responses.response import ResponseBuilder
from dataplane.errors import WorkerStreamError
from dataplane.types import Event, Finished, ReasoningDelta, Started, TextDelta, ToolCallDelta, Usage

STARTED = Started("rid", "model-x", 1700000000, "grpc://w")


def skeleton() -> dict[str, Any]:
    return {"id": "resp_1", "object": "response", "status": "in_progress", "output": [], "usage": None}


def run(events: list[Event], *, streaming: bool = True) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    builder = ResponseBuilder(skeleton(), streaming=streaming)
    builder.start(STARTED)
    sent = builder.drain()
    for event in events:
        builder.feed(event)
        sent += copy.deepcopy(builder.drain())  # serialized at once, as the SSE writer does
    builder.finish()
    builder.close()
    return builder.response, sent + builder.drain()


def without_ids(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_ids(v) for k, v in value.items() if k not in ("id", "item_id", "completed_at")}
    if isinstance(value, list):
        return [without_ids(v) for v in value]
    return value


def types(sent: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in sent]


def test_text_reasoning_and_two_calls() -> None:
    events: list[Event] = [
        ReasoningDelta(0, "think "),
        ReasoningDelta(0, "hard"),
        TextDelta(0, "Let me "),
        TextDelta(0, "check."),
        ToolCallDelta(0, 0, "call_a", "get_weather", '{"city":'),
        ToolCallDelta(0, 0, None, None, ' "Paris"}'),
        ToolCallDelta(0, 1, "call_b", "get_time", "{}"),
        Finished(0, "tool_calls"),
        Usage(10, 7, cached_tokens=4, reasoning_tokens=2),
    ]
    response, sent = run(events)
    assert [(i["type"], i["status"]) for i in response["output"]] == [
        ("reasoning", "completed"),
        ("message", "completed"),
        ("function_call", "completed"),
        ("function_call", "completed"),
    ]
    reasoning, message, first, second = response["output"]
    assert reasoning["content"] == [{"type": "reasoning_text", "text": "think hard"}]
    assert message["content"][0]["text"] == "Let me check."
    assert (first["call_id"], first["name"], first["arguments"]) == (
        "call_a",
        "get_weather",
        '{"city": "Paris"}',
    )
    assert (second["call_id"], second["arguments"]) == ("call_b", "{}")
    assert response["status"] == "completed" and response["model"] == "model-x"
    assert response["usage"] == {
        "input_tokens": 10,
        "input_tokens_details": {"cached_tokens": 4},
        "output_tokens": 7,
        "output_tokens_details": {"reasoning_tokens": 2},
        "total_tokens": 17,
    }
    assert types(sent) == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.reasoning_text.delta",
        "response.reasoning_text.delta",
        "response.reasoning_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e["sequence_number"] for e in sent] == list(range(len(sent)))
    assert [e["output_index"] for e in sent if "output_index" in e] == [0] * 7 + [1] * 7 + [2] * 5 + [3] * 4
    added = [e["item"] for e in sent if e["type"] == "response.output_item.added"]
    assert [i["status"] for i in added] == ["in_progress"] * 4
    assert added[1]["content"] == [] and added[2]["arguments"] == ""
    assert [e["item"] for e in sent if e["type"] == "response.output_item.done"] == response["output"]
    assert sent[0]["response"]["output"] == [] and sent[0]["response"]["status"] == "in_progress"
    assert sent[-1]["response"] == response


@pytest.mark.parametrize("split", [1, 2, 5])
def test_non_streaming_is_the_same_fold(split: int) -> None:
    text = "Hello, wörld! 👋 and more"
    pieces = [TextDelta(0, text[i : i + split]) for i in range(0, len(text), split)]
    events: list[Event] = [ReasoningDelta(0, "hmm"), *pieces, Finished(0, "stop"), Usage(3, 4)]
    streamed, sent = run(events)
    whole, nothing = run(events, streaming=False)
    assert nothing == []
    assert without_ids(whole) == without_ids(streamed)
    deltas = "".join(e["delta"] for e in sent if e["type"] == "response.output_text.delta")
    assert deltas == text == whole["output"][1]["content"][0]["text"]


def test_length_is_incomplete() -> None:
    response, sent = run([TextDelta(0, "cut"), Finished(0, "length"), Usage(3, 1)])
    assert response["status"] == "incomplete"
    assert response["incomplete_details"] == {"reason": "max_output_tokens"}
    assert response["output"][0]["status"] == "incomplete"
    assert sent[-1]["type"] == "response.incomplete"


def test_failure_after_the_start() -> None:
    builder = ResponseBuilder(skeleton(), streaming=True)
    builder.start(STARTED)
    builder.feed(TextDelta(0, "partial"))
    builder.fail(WorkerStreamError("worker broke off", status=502))
    builder.close()
    sent = builder.drain()
    assert types(sent)[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.failed",
    ]
    failed = sent[-1]["response"]
    assert failed["status"] == "failed"
    assert failed["error"] == {"code": "worker_stream_failed", "message": "worker broke off"}
    assert failed["output"][0]["status"] == "incomplete"


def test_empty_deltas_open_no_item() -> None:
    response, sent = run([TextDelta(0, ""), Finished(0, "stop"), Usage(1, 1)])
    assert response["output"] == []
    assert types(sent) == ["response.created", "response.in_progress", "response.completed"]
