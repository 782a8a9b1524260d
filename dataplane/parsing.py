"""The parse stage: a choice's text → reasoning, content and tool-call events.

Per choice, text goes through the reasoning parser (when reasoning is separated and the model has one),
then what is not reasoning through the tool-call handling the request asks for:

- ``parser``: the model's tool-call parser (``tool_choice`` auto); content is what it leaves over.
- ``json``: ``tool_choice`` required; the worker was held to a JSON array of ``{"name", "parameters"}``,
  read by the generic ``json`` parser.
- ``function``: a named function; the worker was held to its parameters, which are the call's arguments
  as they arrive.

Streaming and non-streaming are the same events (the non-streaming response is their fold), so the two
agree for every split of the text. A choice that made a call and stopped finishes with ``tool_calls``.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

from dataplane.constraints import tool_constraint
from dataplane.types import (
    Constraint,
    Event,
    Finished,
    FinishReason,
    GenerateRequest,
    JsonObject,
    ReasoningDelta,
    TextDelta,
    TokenLogprob,
    ToolCallDelta,
)
from parsers import (
    ReasoningParser,
    ToolParser,
    make_reasoning_parser,
    make_tool_parser,
    reasoning_parser_name_for_model,
    tool_parser_name_for_model,
)
from parsers import ToolCallDelta as ParsedCall
from parsers.reasoning import REASONING_FORMATS

ToolMode = Literal["parser", "json", "function"]


@dataclass(frozen=True, slots=True)
class ParseSpec:
    """How one request's choices are parsed; ``None`` fields are stages that do not run."""

    reasoning_parser: str | None = None
    starts_in_reasoning: bool | None = None  # None: the parser family's default
    tool_mode: ToolMode | None = None
    tool_parser: str = "passthrough"  # the ``parser`` mode's parser
    tools: tuple[JsonObject, ...] = ()
    function: str | None = None  # the ``function`` mode's function
    parallel_tool_calls: bool = True

    def choice(self, index: int) -> ChoiceParser:
        return ChoiceParser(self, index)


@dataclass(frozen=True, slots=True)
class ParserNames:
    """The model's parsers: ``--tool-call-parser``/``--reasoning-parser``, else its name's table entry."""

    tool: str = "passthrough"
    reasoning: str = "passthrough"


@functools.lru_cache(maxsize=256)
def parser_names(model: str, tool: str | None = None, reasoning: str | None = None) -> ParserNames:
    """A model's parsers: ``tool``/``reasoning`` when configured, else what its name maps to."""
    return ParserNames(
        tool or tool_parser_name_for_model(model), reasoning or reasoning_parser_name_for_model(model)
    )


def plan(
    request: GenerateRequest, prompt: str, names: ParserNames
) -> tuple[ParseSpec | None, Constraint | None]:
    """How a request's output is parsed, and the constraint its worker gets (the client's, else the one
    ``tool_choice`` required or a named function asks for: a client's constraint wins, as in SMG, and
    the tools are then parsed as with ``auto``). Only chat requests are parsed."""
    constraint = request.constraint
    if request.messages is None:
        return None, constraint
    choice = request.tool_choice
    tool_mode: ToolMode | None = None
    if request.tools and choice.mode != "none":
        from_tools = (
            None
            if constraint is not None
            else tool_constraint(request.tools, choice, parallel=request.parallel_tool_calls)
        )
        if from_tools is not None:
            constraint = from_tools
            tool_mode = "function" if choice.mode == "function" else "json"
        elif names.tool != "passthrough":
            tool_mode = "parser"
    reasoning = names.reasoning if request.separate_reasoning and names.reasoning != "passthrough" else None
    if reasoning is None and tool_mode is None:
        return None, constraint
    final = request.messages[-1].get("content") if request.continue_final_message else None
    continued = final if isinstance(final, str) else None
    spec = ParseSpec(
        reasoning_parser=reasoning,
        starts_in_reasoning=None if reasoning is None else starts_in_reasoning(prompt, reasoning, continued),
        tool_mode=tool_mode,
        tool_parser=names.tool,
        tools=request.tools,
        function=choice.function,
        parallel_tool_calls=request.parallel_tool_calls,
    )
    return spec, constraint


def starts_in_reasoning(prompt: str, reasoning_parser: str, continued: str | None = None) -> bool | None:
    """Whether the model starts inside a reasoning block. True when the template opened one at the end
    of the prompt (``…<think>\\n``), False when it closed one there (thinking switched off, as Qwen3's
    ``<think>\\n\\n</think>\\n\\n``), None otherwise: the model opens its own, or its family always
    thinks. Only the prompt's end counts, so a marker a user typed is not mistaken for the template's;
    with ``continue_final_message``, ``continued`` (the message the model goes on with) is read whole."""
    fmt = REASONING_FORMATS.get(reasoning_parser)
    if fmt is None:
        return None
    if continued:
        opened, closed = continued.rfind(fmt.start), continued.rfind(fmt.end)
        if opened != closed:  # one of them is there: the later one says where the message stopped
            return opened > closed
    opened, closed = prompt.rfind(fmt.start), prompt.rfind(fmt.end)
    marker, at = (fmt.start, opened) if opened > closed else (fmt.end, closed)
    if at >= 0 and not prompt[at + len(marker) :].strip():
        return opened > closed
    return None


class ChoiceParser:
    """One choice's parsers; turns its ``TextDelta``s into parsed events and adjusts its ``Finished``."""

    __slots__ = ("_function", "_index", "_plain", "_reasoning", "_single", "_tools", "calls")

    def __init__(self, spec: ParseSpec, index: int) -> None:
        self._index = index
        self._reasoning: ReasoningParser | None = (
            make_reasoning_parser(spec.reasoning_parser, spec.starts_in_reasoning)
            if spec.reasoning_parser is not None
            else None
        )
        self._tools: ToolParser | None = None
        self._function: str | None = None
        if spec.tool_mode == "function":
            self._function = spec.function
        elif spec.tool_mode is not None:
            name = "json" if spec.tool_mode == "json" else spec.tool_parser
            self._tools = make_tool_parser(name, spec.tools or None)
        self._single = not spec.parallel_tool_calls
        self._plain = self._tools is None and self._function is None
        self.calls: dict[int, str] = {}  # the parser's tool index -> the call id sent for it

    def process(self, events: Sequence[Event]) -> list[Event]:
        out: list[Event] = []
        for event in events:
            if type(event) is TextDelta:
                self._text(event, out)
            elif isinstance(event, Finished):
                self._finish(out)
                reason: FinishReason = "tool_calls" if self.calls and event.reason == "stop" else event.reason
                out.append(replace(event, reason=reason) if reason != event.reason else event)
            else:
                out.append(event)
        return out

    def _text(self, delta: TextDelta, out: list[Event]) -> None:
        text = delta.text
        if self._reasoning is not None:
            reasoning, text = self._reasoning.feed(text)
            if reasoning:
                out.append(ReasoningDelta(self._index, reasoning))
        if self._plain:  # the common case: reasoning apart, the rest is content
            if text == delta.text:
                out.append(delta)
            elif text or delta.logprobs:
                out.append(TextDelta(self._index, text, delta.logprobs))
            return
        self._normal(text, delta.logprobs, out)

    def _normal(self, text: str, logprobs: tuple[TokenLogprob, ...], out: list[Event]) -> None:
        if self._tools is not None:
            parsed = self._tools.feed(text) if text else None
            if parsed is not None and (parsed.normal_text or logprobs):
                out.append(TextDelta(self._index, parsed.normal_text, logprobs))
            elif logprobs:
                out.append(TextDelta(self._index, "", logprobs))
            if parsed is not None:
                self._calls(parsed.calls, out)
        elif self._function is not None:
            if logprobs:
                out.append(TextDelta(self._index, "", logprobs))
            if text:
                self._arguments(text, out)
        elif text or logprobs:
            out.append(TextDelta(self._index, text, logprobs))

    def _finish(self, out: list[Event]) -> None:
        if self._reasoning is not None:
            reasoning, text = self._reasoning.finish()
            if reasoning:
                out.append(ReasoningDelta(self._index, reasoning))
            if text:
                self._normal(text, (), out)
        if self._tools is not None:
            parsed = self._tools.finish()
            if parsed.normal_text:
                out.append(TextDelta(self._index, parsed.normal_text))
            self._calls(parsed.calls, out)

    def _calls(self, calls: Sequence[ParsedCall], out: list[Event]) -> None:
        for call in calls:
            if self._single and call.tool_index > 0:
                continue  # parallel_tool_calls false: the first call only
            call_id = None
            if call.name is not None:
                call_id = self.calls[call.tool_index] = call.id or new_call_id()
            out.append(ToolCallDelta(self._index, call.tool_index, call_id, call.name, call.arguments_delta))

    def _arguments(self, text: str, out: list[Event]) -> None:
        if not self.calls:
            call_id = self.calls[0] = new_call_id()
            out.append(ToolCallDelta(self._index, 0, call_id, self._function, ""))
        out.append(ToolCallDelta(self._index, 0, None, None, text))


def new_call_id() -> str:
    """OpenAI's form: ``call_`` and 24 characters, unique per call."""
    return "call_" + uuid.uuid4().hex[:24]
