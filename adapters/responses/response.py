"""Events → a Response object and OpenAI's Responses stream events, in one fold.

``ResponseBuilder`` turns the gateway's events into output items as they arrive — a ``reasoning`` item
for reasoning text, a ``message`` for content, a ``function_call`` per tool call — and, when streaming,
into the exact event sequence OpenAI sends, numbered from 0::

    response.created, response.in_progress,
    per item: response.output_item.added,
      message:   response.content_part.added, response.output_text.delta…, response.output_text.done,
                 response.content_part.done
      reasoning: response.content_part.added, response.reasoning_text.delta…, response.reasoning_text.done,
                 response.content_part.done
      function:  response.function_call_arguments.delta…, response.function_call_arguments.done
    response.output_item.done,
    response.completed | response.incomplete (max_output_tokens) | response.failed

The non-streaming response is the same fold with the stream events left out, so the two are equal.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from adapters.responses.items import new_id
from dataplane.errors import GatewayError
from dataplane.types import (
    Event,
    Finished,
    FinishReason,
    ReasoningDelta,
    Started,
    TextDelta,
    ToolCallDelta,
    Usage,
)

ItemKind = Literal["message", "reasoning", "function_call"]


def usage_json(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_tokens},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.total_tokens,
    }


class ResponseBuilder:
    """One response: ``start``, ``feed`` every event, then ``finish`` (or ``fail``) and ``close``.

    ``response`` is the Response object as it stands; with ``streaming``, ``drain()`` hands out the stream
    events produced since the last call.
    """

    def __init__(self, response: dict[str, Any], *, streaming: bool) -> None:
        self.response = response
        self.error: GatewayError | None = None
        self._streaming = streaming
        self._events: list[dict[str, Any]] = []
        self._sequence = 0
        self._item: dict[str, Any] | None = None  # the output item being written
        self._tool_index = -1  # the tool call the open function_call item belongs to
        self._reason: FinishReason | None = None
        self._usage = Usage(0, 0)

    def drain(self) -> list[dict[str, Any]]:
        events, self._events = self._events, []
        return events

    def start(self, started: Started) -> None:
        self.response["model"] = started.model
        self._lifecycle("response.created")
        self._lifecycle("response.in_progress")

    def feed(self, event: Event) -> None:
        match event:
            case TextDelta(text=text) if text:
                item = self._open("message")
                item["content"][0]["text"] += text
                self._emit("response.output_text.delta", self._at(item, delta=text, logprobs=[]))
            case ReasoningDelta(text=text) if text:
                item = self._open("reasoning")
                item["content"][0]["text"] += text
                self._emit("response.reasoning_text.delta", self._at(item, delta=text))
            case ToolCallDelta():
                item = self._open_call(event)
                item["arguments"] += event.arguments_delta
                if event.arguments_delta:
                    delta = {
                        "item_id": item["id"],
                        "output_index": self._index,
                        "delta": event.arguments_delta,
                    }
                    self._emit("response.function_call_arguments.delta", delta)
            case Finished(reason=reason):
                self._reason = reason
            case Usage():
                self._usage = event
            case TextDelta() | ReasoningDelta() | Started():
                pass

    def finish(self) -> None:
        """The worker is done: close the open item and settle status and usage (no final event yet)."""
        incomplete = self._reason == "length"
        self._close("incomplete" if incomplete else "completed")
        self.response["usage"] = usage_json(self._usage)
        if incomplete:
            self.response["status"] = "incomplete"
            self.response["incomplete_details"] = {"reason": "max_output_tokens"}
        elif self._reason == "abort":
            self.fail_with("server_error", "the worker aborted the request")
        else:
            self.response["status"] = "completed"
            self.response["completed_at"] = int(time.time())

    def fail(self, exc: GatewayError) -> None:
        """The turn failed after it started (the worker broke off, or storing it failed)."""
        self.error = exc
        self._close("incomplete")
        self.fail_with(exc.code, exc.message)

    def fail_with(self, code: str, message: str) -> None:
        self.response["status"] = "failed"
        self.response["error"] = {"code": code, "message": message}
        self.response.pop("completed_at", None)

    def close(self) -> None:
        """The final event: ``response.completed``, ``response.incomplete`` or ``response.failed``."""
        status = self.response["status"]
        kind = {"completed": "completed", "incomplete": "incomplete"}.get(status, "failed")
        self._emit(f"response.{kind}", {"response": self.response})

    # --- items ---------------------------------------------------------------------------------------
    @property
    def _index(self) -> int:
        return len(self.response["output"]) - 1

    def _open(self, kind: ItemKind) -> dict[str, Any]:
        if self._item is not None and self._item["type"] == kind:
            return self._item
        self._close("completed")
        if kind == "message":
            item: dict[str, Any] = {"id": new_id("msg_"), "type": "message", "role": "assistant"}
            part: dict[str, Any] = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        else:
            item = {"id": new_id("rs_"), "type": "reasoning", "summary": []}
            part = {"type": "reasoning_text", "text": ""}
        item |= {"status": "in_progress", "content": []}
        self._added(item)
        item["content"].append(part)
        self._emit("response.content_part.added", self._at(item, part=dict(part)))
        return item

    def _open_call(self, event: ToolCallDelta) -> dict[str, Any]:
        item = self._item
        if item is not None and item["type"] == "function_call" and self._tool_index == event.tool_index:
            return item
        self._close("completed")
        self._tool_index = event.tool_index
        item = {
            "id": new_id("fc_"),
            "type": "function_call",
            "status": "in_progress",
            "call_id": event.id or new_id("call_"),
            "name": event.name or "",
            "arguments": "",
        }
        self._added(item)
        return item

    def _added(self, item: dict[str, Any]) -> None:
        self.response["output"].append(item)
        self._item = item
        snapshot = {**item, "content": []} if "content" in item else dict(item)
        self._emit("response.output_item.added", {"output_index": self._index, "item": snapshot})

    def _close(self, status: str) -> None:
        item, self._item = self._item, None
        if item is None:
            return
        item["status"] = status
        if item["type"] == "function_call":
            done = {"item_id": item["id"], "output_index": self._index, "arguments": item["arguments"]}
            self._emit("response.function_call_arguments.done", done)
        else:
            part = item["content"][0]
            kind = "output_text" if item["type"] == "message" else "reasoning_text"
            extra: dict[str, Any] = {"logprobs": []} if kind == "output_text" else {}
            self._emit(f"response.{kind}.done", self._at(item, text=part["text"], **extra))
            self._emit("response.content_part.done", self._at(item, part=part))
        self._emit("response.output_item.done", {"output_index": self._index, "item": item})

    def _at(self, item: dict[str, Any], **fields: Any) -> dict[str, Any]:
        return {"item_id": item["id"], "output_index": self._index, "content_index": 0, **fields}

    # --- events --------------------------------------------------------------------------------------
    def _lifecycle(self, kind: str) -> None:
        self._emit(kind, {"response": {**self.response, "output": []}})

    def _emit(self, kind: str, fields: dict[str, Any]) -> None:
        if self._streaming:
            self._events.append({"type": kind, "sequence_number": self._sequence, **fields})
            self._sequence += 1
