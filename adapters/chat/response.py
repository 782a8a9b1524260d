"""Events → OpenAI Chat Completions JSON (``chat.completion`` and ``chat.completion.chunk``)."""

from __future__ import annotations

from typing import Any

from adapters.openai_format import chat_logprobs, stream_chunk, usage_json
from dataplane.types import (
    Completion,
    Event,
    Finished,
    ReasoningDelta,
    Started,
    TextDelta,
    ToolCallDelta,
    Usage,
)


def chat_completion(done: Completion) -> dict[str, Any]:
    choices = []
    for c in done.choices:
        # OpenAI: a message that only calls tools has null content.
        content = None if c.tool_calls and not c.text else c.text
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if c.reasoning:
            message["reasoning_content"] = c.reasoning
        if c.tool_calls:
            message["tool_calls"] = [
                {"id": t.id, "type": "function", "function": {"name": t.name, "arguments": t.arguments}}
                for t in c.tool_calls
            ]
        choices.append(
            {
                "index": c.index,
                "message": message,
                "logprobs": chat_logprobs(c.logprobs) if c.logprobs else None,
                "finish_reason": c.finish_reason,
                "matched_stop": c.matched_stop,
            }
        )
    return {
        "id": done.started.request_id,
        "object": "chat.completion",
        "created": done.started.created,
        "model": done.started.model,
        "choices": choices,
        "usage": usage_json(done.usage),
    }


class ChatChunks:
    """Turns one request's events into ``chat.completion.chunk`` payloads."""

    def __init__(self, started: Started, include_usage: bool, stream_reasoning: bool = True) -> None:
        self._base = {
            "id": started.request_id,
            "object": "chat.completion.chunk",
            "created": started.created,
            "model": started.model,
        }
        self._include_usage = include_usage
        self._greeted: set[int] = set()
        # stream_reasoning false (SGLang's): each choice's reasoning is held, and leaves in one chunk
        # before whatever follows it (text, a tool call, the finish).
        self._held: dict[int, list[str]] | None = None if stream_reasoning else {}

    def on_event(self, event: Event) -> list[dict[str, Any]]:
        if self._held is not None:
            return self._holding(event)
        return self._chunk_of(event)

    def _holding(self, event: Event) -> list[dict[str, Any]]:
        held = self._held
        assert held is not None
        if isinstance(event, ReasoningDelta):
            held.setdefault(event.index, []).append(event.text)
            return []
        index = getattr(event, "index", None)
        if index is None or index not in held:
            return self._chunk_of(event)
        reasoning = "".join(held.pop(index))
        return self._chunks(index, {"reasoning_content": reasoning}) + self._chunk_of(event)

    def _chunk_of(self, event: Event) -> list[dict[str, Any]]:
        match event:
            case TextDelta(index=i, text=text):
                delta: dict[str, Any] = {"content": text}
                logprobs = chat_logprobs(event.logprobs) if event.logprobs else None
                return self._chunks(i, delta, logprobs=logprobs)
            case ReasoningDelta(index=i, text=text):
                return self._chunks(i, {"reasoning_content": text})
            case ToolCallDelta(index=i):
                call: dict[str, Any] = {
                    "index": event.tool_index,
                    "function": {"arguments": event.arguments_delta},
                }
                if event.id is not None:
                    call |= {"id": event.id, "type": "function"}
                if event.name is not None:
                    call["function"]["name"] = event.name
                return self._chunks(i, {"tool_calls": [call]})
            case Finished(index=i):
                return self._chunks(i, {}, finish=event)
            case Usage():
                if not self._include_usage:
                    return []
                return [{**self._base, "choices": [], "usage": usage_json(event)}]
            case Started():
                return []

    def _chunks(
        self, index: int, delta: dict[str, Any], *, logprobs: Any = None, finish: Finished | None = None
    ) -> list[dict[str, Any]]:
        out = []
        if index not in self._greeted:
            # OpenAI opens every choice with the role (and empty content) before any text.
            self._greeted.add(index)
            out.append(self._chunk(index, {"role": "assistant", "content": ""}))
        if delta or finish is not None:
            out.append(self._chunk(index, delta, logprobs, finish))
        return out

    def _chunk(
        self, index: int, delta: dict[str, Any], logprobs: Any = None, finish: Finished | None = None
    ) -> dict[str, Any]:
        choice = {"index": index, "delta": delta, "logprobs": logprobs}
        return stream_chunk(self._base, choice, finish, self._include_usage)
