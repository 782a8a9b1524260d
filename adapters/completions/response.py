"""Events → OpenAI Completions JSON (``text_completion``, streamed or not)."""

from __future__ import annotations

from typing import Any

from adapters.openai_format import completion_logprobs, stream_chunk, usage_json
from dataplane.types import Completion, Event, Finished, Started, TextDelta, Usage


def text_completion(done: Completion, echo_texts: list[str]) -> dict[str, Any]:
    choices = []
    for c in done.choices:
        prefix = echo_texts[c.index] if echo_texts else ""
        choices.append(
            {
                "index": c.index,
                "text": prefix + c.text,
                "logprobs": completion_logprobs(c.logprobs, len(prefix)) if c.logprobs else None,
                "finish_reason": c.finish_reason,
                "matched_stop": c.matched_stop,
            }
        )
    return {
        "id": done.started.request_id,
        "object": "text_completion",
        "created": done.started.created,
        "model": done.started.model,
        "choices": choices,
        "usage": usage_json(done.usage),
    }


class CompletionChunks:
    """Turns events into streamed ``text_completion`` payloads (echoed prompts go first, per choice)."""

    def __init__(self, started: Started, include_usage: bool, echo_texts: list[str]) -> None:
        self._base = {
            "id": started.request_id,
            "object": "text_completion",
            "created": started.created,
            "model": started.model,
        }
        self._include_usage = include_usage
        self._echo = echo_texts
        self._echoed: set[int] = set()
        self._offsets: dict[int, int] = {}

    def on_event(self, event: Event) -> list[dict[str, Any]]:
        if isinstance(event, TextDelta):
            echo = self._pending_echo(event.index)
            start = self._offsets.get(event.index, 0) + len(echo)  # offsets count the echoed prompt
            self._offsets[event.index] = start + len(event.text)
            lp = completion_logprobs(event.logprobs, start) if event.logprobs else None
            return [self._chunk(event.index, echo + event.text, lp, None)]
        if isinstance(event, Finished):
            return [self._chunk(event.index, self._pending_echo(event.index), None, event)]
        if isinstance(event, Usage) and self._include_usage:
            return [{**self._base, "choices": [], "usage": usage_json(event)}]
        return []

    def _pending_echo(self, index: int) -> str:
        if not self._echo or index in self._echoed:
            return ""
        self._echoed.add(index)
        return self._echo[index]

    def _chunk(self, index: int, text: str, logprobs: Any, finish: Finished | None) -> dict[str, Any]:
        choice = {"index": index, "text": text, "logprobs": logprobs}
        return stream_chunk(self._base, choice, finish, self._include_usage)
