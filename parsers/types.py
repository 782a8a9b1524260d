"""Values that flow out of the parsers, and the two parser protocols.

Every parser is a per-request, stateful, synchronous object: `feed()` takes the next piece of generated
text (any split, down to single characters) and returns what is now certain; `finish()` ends the output
and flushes whatever was held back. Streaming output equals non-streaming output for every split: the
concatenation of the deltas does not depend on how the text was cut.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

# An OpenAI tool definition ({"type": "function", "function": {"name", "parameters"}}) or its bare
# "function" object; parsers read only names and parameter types.
Tool = Mapping[str, object]


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """One piece of a tool call, in OpenAI's streaming delta form.

    The first delta of a call carries its `name` (and `id` when the format has one); later deltas carry
    `name=None`. The `arguments_delta`s of one `tool_index`, concatenated, are the call's arguments: the
    JSON text of an object.
    """

    tool_index: int
    name: str | None
    arguments_delta: str
    id: str | None = None


@dataclass(frozen=True, slots=True)
class ToolParse:
    """What one `feed()`/`finish()` produced: normal text and call deltas, in the order of the text."""

    normal_text: str = ""
    calls: list[ToolCallDelta] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A complete call: `arguments` is the JSON text of an object."""

    name: str
    arguments: str
    id: str | None = None


class ReasoningDelta(NamedTuple):
    """What one reasoning `feed()`/`finish()` produced: `(reasoning, normal)`."""

    reasoning: str
    normal: str


class ToolParser(Protocol):
    def feed(self, text: str) -> ToolParse: ...

    def finish(self) -> ToolParse: ...


class ReasoningParser(Protocol):
    @property
    def in_reasoning(self) -> bool: ...

    def feed(self, text: str) -> ReasoningDelta: ...

    def finish(self) -> ReasoningDelta: ...


def parse_complete(parser: ToolParser, text: str) -> tuple[str, list[ToolCall]]:
    """Non-streaming parse: the whole `text` through a fresh `parser`, folded into complete calls."""
    first = parser.feed(text)
    last = parser.finish()
    normal = first.normal_text + last.normal_text
    names: dict[int, str] = {}
    ids: dict[int, str | None] = {}
    args: dict[int, list[str]] = {}
    for delta in (*first.calls, *last.calls):
        if delta.name is not None:
            names[delta.tool_index] = delta.name
            ids[delta.tool_index] = delta.id
        args.setdefault(delta.tool_index, []).append(delta.arguments_delta)
    calls = [ToolCall(names[i], "".join(args[i]), ids[i]) for i in sorted(names)]
    return normal, calls
